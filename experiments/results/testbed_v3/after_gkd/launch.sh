#!/bin/bash
# The after_gkd comparison (plan.md beside this file), from the repo root; rerunning continues
# where a killed run stopped (finished points are skipped):
#   nohup env PY=.venv/bin/python bash experiments/results/testbed_v3/after_gkd/launch.sh > runs/testbed_v3/after_gkd.log 2>&1 &
set -euo pipefail
export PYTHONPATH=$PWD XLA_FLAGS="--xla_force_host_platform_device_count=1"
PY=${PY:-python}
R=runs/testbed_v3
HERE=experiments/results/testbed_v3
mkdir -p $R/after_gkd/points
for stage in teacher student_n2000 teacher_test student_n2000_test; do  # teacher B, student B
  [ -e $R/$stage ] || cp -r $HERE/stages_b/$stage $R/$stage
done
# The baseline's points are the prompts_b sweep's (same overrides and exports), seeds 0-2.
base="divergence=generalized_jsd,beta=0.9,student=1.0,dataset=0.0,num_train_examples=20000"
for seed in 0 1 2; do
  [ -e "$R/after_gkd/points/$base,seed=$seed" ] || cp -r "$HERE/prompts_b/points/$base,seed=$seed" $R/after_gkd/points/
done
$PY -m gkd.sweep --config=configs/testbed.py:sweep=after_gkd,seeds=3 --workdir=$R/after_gkd
# Reproduction check: the baseline's seed 0 rerun at this commit.
w=$R/after_gkd_repro/$base,seed=0
[ -f "$w/final_metrics.json" ] || $PY -m gkd.main --config=configs/testbed.py:stage=gkd --workdir="$w" \
  --config.train.progress_bar=false --config.objective.divergence=generalized_jsd \
  "--config.objective.divergence_kw={'beta': 0.9}" --config.mix.student=1.0 --config.mix.dataset=0.0 \
  --config.data.num_train_examples=20000 --config.seed=0
# Committing (small files; per-example rows gzipped):
#   bash experiments/results/collect.sh runs/testbed_v3/after_gkd experiments/results/testbed_v3/after_gkd
#   bash experiments/results/collect.sh runs/testbed_v3/after_gkd_repro experiments/results/testbed_v3/after_gkd/repro
#   find experiments/results/testbed_v3/after_gkd -name eval_examples.jsonl -exec gzip -nf {} +
