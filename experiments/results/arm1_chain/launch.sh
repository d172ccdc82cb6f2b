#!/bin/bash
# Arm 1 end to end (configs/arm1_chain.py), from the repo root; every step skips what is already
# finished, so rerunning this script continues where a killed one stopped:
#   nohup env PY=.venv/bin/python bash experiments/results/arm1_chain/launch.sh STEP > runs/arm1_chain/STEP.log 2>&1 &
# STEP: stages (teacher and student, side by side), gate, methods (the pre-registered sweep).
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
    train $R/student --config=$C:stage=student
    wait ;;&
  gate|all)
    [ -f $R/methods/gate.json ] || $PY -m gkd.eval.gate --config=$C --out=$R/methods ;;&
  methods|all)
    $PY -m gkd.sweep --config=$C:sweep=methods --workdir=$R/methods --parallel=${PARALLEL:-2} ;;
esac
