#!/bin/bash
# Per-step cost of the methods after GKD on the v3 testbed: 40-step runs, one after another in
# the order given (default: the list below, twice, interleaved), median step_s over steps 6-40.
#   bash experiments/results/testbed_v3/method_cost/measure.sh [METHOD ...] >> experiments/results/testbed_v3/method_cost/raw.jsonl
# Methods: on_policy (JSD(0.9), the baseline), layer_map, rl, lora, skd, replay, supervised_top8 (top-8
# KD on the dataset's responses, live teacher) and store_top8 (the same from runs/testbed_v3/store_k8).
set -euo pipefail
export PYTHONPATH=$PWD XLA_FLAGS="--xla_force_host_platform_device_count=1"
PY=${PY:-.venv/bin/python}
methods=("$@")
[ ${#methods[@]} -gt 0 ] || methods=(on_policy layer_map rl lora skd replay supervised_top8 store_top8
                                     on_policy layer_map rl lora skd replay supervised_top8 store_top8)
echo "{\"machine\": \"$(lscpu | grep 'Model name' | sed 's/.*: *//'), $(nproc) cores, shared\", \"commit\": \"$(git rev-parse --short HEAD)\"}"
top8=(--config.mix.student=0 --config.mix.dataset=1 --config.objective.divergence=forward_kl
      "--config.objective.divergence_kw={}" --config.objective.teacher_topk=8)
for method in "${methods[@]}"; do
  case $method in
    on_policy) extra=() ;;
    layer_map) extra=(--config.objective.layer_map=0:1,1:3 --config.objective.hidden_loss=cosine --config.objective.hidden_weight=1.0) ;;
    rl) extra=(--config.objective.rl_weight=0.1) ;;
    lora) extra=(--config.lora.rank=8) ;;
    skd) extra=(--config.sampling.speculative_topk=1) ;;
    replay) extra=(--config.mix.replay.capacity=320 --config.mix.replay.every=20 --config.mix.replay.val_examples=64) ;;
    supervised_top8) extra=("${top8[@]}") ;;
    store_top8) extra=("${top8[@]}" --config.teacher_store=runs/testbed_v3/store_k8) ;;
    *) echo "unknown method $method" >&2; exit 1 ;;
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
