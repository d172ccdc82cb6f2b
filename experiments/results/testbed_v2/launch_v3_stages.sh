#!/bin/bash
# Testbed v3 stages, chosen after the 4,000-step student SFT (student_sft_4k) reached 0.89 validation
# accuracy, above the 2,000-step teacher (0.834): both v2 stages were under-trained. v3 trains the
# teacher to its plateau and limits the *student's* labelled data (the teacher has seen all 20,000
# training examples; the student's SFT and distillation see the first N), the setting where the
# teacher knows something the student's data does not. Skips finished work; rerun to continue.
#   nohup env PY=.venv/bin/python bash experiments/results/testbed_v2/launch_v3_stages.sh WHAT > LOG 2>&1 &
# WHAT: teacher | student N   (N: number of labelled training examples)
set -euo pipefail
export PYTHONPATH=$PWD XLA_FLAGS="--xla_force_host_platform_device_count=1"
PY=${PY:-python}
R=runs/testbed_v3
mkdir -p $R
train() {  # workdir, then gkd.main args; skipped when finished
  [ -f "$1/final_metrics.json" ] || $PY -m gkd.main "$2" --workdir="$1" --config.train.progress_bar=false \
    --config.eval.num_examples=500 "${@:3}"
}
case $1 in
  teacher) train $R/teacher --config=configs/testbed.py:stage=teacher,steps=4000 --config.eval.every=500 ;;
  student) train $R/student_n$2 --config=configs/testbed.py:stage=student,steps=4000 --config.eval.every=500 \
             --config.data.num_train_examples=$2 ;;
esac
