#!/bin/bash
# Arm 1 end to end (configs/arm1_chain.py), from the repo root; every step skips what is already
# finished, so rerunning this script continues where a killed one stopped:
#   nohup env PY=.venv/bin/python bash experiments/results/arm1_chain/launch.sh STEP > runs/arm1_chain/STEP.log 2>&1 &
# STEP: stages (teacher and student, side by side), gate, tests (the two stages' test evals),
# methods (the pre-registered sweep, then the exposure analysis).
set -euo pipefail
export PYTHONPATH=$PWD XLA_FLAGS="--xla_force_host_platform_device_count=1"
PY=${PY:-python}
R=runs/arm1_chain
C=configs/arm1_chain.py
mkdir -p $R
train() {  # workdir, then gkd.main args; skipped when finished
  [ -f "$1/final_metrics.json" ] || $PY -m gkd.main "$2" --workdir="$1" --config.train.progress_bar=false "${@:3}"
}
case "${1:-all}" in
  stages|all)
    train $R/teacher --config=$C:stage=teacher &
    train $R/student --config=$C:stage=student,labelled=20000
    # The plan's rule picks the student's labels from the stages' validation accuracies: all
    # 20,000 if the teacher leads by 15 points or more, else the first 2,000 (trained too). It
    # picked all 20,000: teacher 0.974, student 0.798 (stages/*/final_metrics.json).
    train $R/student_n2000 --config=$C:stage=student,labelled=2000
    wait ;;&
  gate|all)
    [ -f $R/methods/gate.json ] || $PY -m gkd.eval.gate --config=$C --out=$R/methods ;;&
  tests|all)  # one step at a negligible learning rate is an eval of the export on test
    for who in teacher student; do
      train $R/${who}_test --config=$C:stage=gkd,student=$R/$who/export,steps=1 \
        --config.optim.learning_rate=1e-12 --config.mix.student=0.0 --config.mix.dataset=1.0
    done ;;&
  methods|all)
    $PY -m gkd.sweep --config=$C:sweep=methods --workdir=$R/methods --parallel=${PARALLEL:-2}
    $PY experiments/results/arm1_chain/exposure.py $R/methods $R/teacher_test ;;
esac
# Committing what finished (small files; per-example rows gzipped):
#   bash experiments/results/collect.sh runs/arm1_chain/methods experiments/results/arm1_chain/methods
#   find experiments/results/arm1_chain/methods -name eval_examples.jsonl -exec gzip -nf {} +
