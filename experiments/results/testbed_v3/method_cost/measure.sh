#!/bin/bash
# Per-step cost of the methods after GKD against plain on-policy JSD(0.9) on the v3 testbed:
# 40-step runs, one after another in this order, median step_s over steps 6-40.
#   bash experiments/results/testbed_v3/method_cost/measure.sh >> experiments/results/testbed_v3/method_cost/raw.jsonl
set -euo pipefail
export PYTHONPATH=$PWD XLA_FLAGS="--xla_force_host_platform_device_count=1"
PY=${PY:-.venv/bin/python}
echo "{\"machine\": \"$(lscpu | grep 'Model name' | sed 's/.*: *//'), $(nproc) cores, shared\", \"commit\": \"$(git rev-parse --short HEAD)\"}"
for method in on_policy layer_map on_policy layer_map; do
  case $method in
    on_policy) extra=() ;;
    layer_map) extra=(--config.objective.layer_map=0:1,1:3 --config.objective.hidden_loss=cosine --config.objective.hidden_weight=1.0) ;;
  esac
  w=$(mktemp -d)
  $PY -m gkd.main --config=configs/testbed.py:stage=gkd,steps=40 --workdir=$w --config.train.progress_bar=false \
    --config.train.log_every=1 --config.eval.num_examples=100 --config.objective.divergence_kw="{'beta': 0.9}" \
    "${extra[@]}" > $w.log 2>&1
  $PY - "$method" "$w" <<'PY'
import json, statistics, sys
method, w = sys.argv[1:]
rows = [json.loads(l) for l in open(f"{w}/metrics.jsonl")]
s = [r["step_s"] for r in rows if "step_s" in r][5:]
print(json.dumps({"method": method, "median_step_s": statistics.median(s), "steps_timed": len(s)}))
PY
  rm -rf $w $w.log
done
