#!/bin/bash
# The v3 testbed end to end (see configs/testbed.py), from the repo root; every step skips what is
# already finished, so rerunning this script continues where a killed one stopped:
#   nohup env PY=.venv/bin/python bash experiments/results/testbed_v3/launch.sh > runs/testbed_v3/launch.log 2>&1 &
set -euo pipefail
export PYTHONPATH=$PWD XLA_FLAGS="--xla_force_host_platform_device_count=1"
PY=${PY:-python}
R=runs/testbed_v3
mkdir -p $R
train() {  # workdir, then gkd.main args; skipped when finished
  [ -f "$1/final_metrics.json" ] || $PY -m gkd.main "$2" --workdir="$1" --config.train.progress_bar=false "${@:3}"
}
train $R/teacher --config=configs/testbed.py:stage=teacher --config.eval.every=500
train $R/student_n2000 --config=configs/testbed.py:stage=student --config.eval.every=500
# Test-split metrics of the two exports (one step at a negligible learning rate is an eval).
for who in teacher student_n2000; do
  train $R/${who}_test --config=configs/testbed.py:stage=gkd,student=$R/$who/export,steps=1 \
    --config.optim.learning_rate=1e-12 --config.mix.student=0.0 --config.mix.dataset=1.0
done
# One teacher pass for the store sweep: its top-8 on the dataset's responses (resumable).
$PY -m gkd.teacher_store --config=configs/testbed.py:stage=gkd --out=$R/store_k8 --kind=dataset --topk=8
for sweep in curves prompts store beyond temperature paper; do
  $PY -m gkd.sweep --config=configs/testbed.py:sweep=$sweep --workdir=$R/$sweep --parallel=${PARALLEL:-1}
done
