#!/bin/bash
# Arm 2 end to end (configs/arm2_smollm2.py), from the repo root; every step skips what is already
# finished, so rerunning this script continues where a killed one stopped:
#   nohup env PY=.venv/bin/python bash experiments/results/arm2_smollm2/launch.sh STEP > runs/arm2_smollm2/STEP.log 2>&1 &
# STEP: teacher (fine-tune SmolLM2-135M-Instruct), student (derive + SFT warm-up), gate, tests (the
# two stages' test evals), methods (the pre-registered sweep), samples (quality-diversity curve).
# EVERY=k and WARMUP=n pick the student: every k-th of the teacher's layers, n SFT steps (plan.md).
set -euo pipefail
export PYTHONPATH=$PWD XLA_FLAGS="--xla_force_host_platform_device_count=1"
PY=${PY:-python}
R=runs/arm2_smollm2
C="configs/arm2_smollm2.py:${EVERY:+every=$EVERY},${WARMUP:+warmup=$WARMUP}"  # unset: config defaults
S=$(dirname "$($PY -c "from configs import arm2_smollm2 as a; print(a.get_config('${C#*:}').student.path)")")
M=$R/methods${S#$R/student}
mkdir -p $R
train() {  # workdir, then gkd.main args; skipped when finished
  [ -f "$1/final_metrics.json" ] || $PY -m gkd.main "$2" --workdir="$1" --config.train.progress_bar=false "${@:3}"
}
case "${1:-all}" in
  teacher|all)
    train $R/teacher --config=$C,stage=teacher ;;&
  student|all)
    train $S --config=$C,stage=student ;;&
  gate|all)
    [ -f $M/gate.json ] || $PY -m gkd.eval.gate --config=$C --out=$M --num_examples=200 --batch_size=50 ;;&
  tests|all)  # one step at a negligible learning rate is an eval of the export on test
    for who in $R/teacher $S; do
      train ${who}_test --config=$C,stage=gkd,student=$who/export,steps=1 \
        --config.optim.learning_rate=1e-12 --config.mix.student=0.0 --config.mix.dataset=1.0
    done ;;&
  methods|all)
    $PY -m gkd.sweep --config=$C,sweep=methods --workdir=$M --parallel=${PARALLEL:-1} ;;&
  samples|all)
    $PY experiments/quality_diversity.py --config=$C --sweep=$M --start=$S/export \
      --out=experiments/results/arm2_smollm2/${M#$R/} --seeds=0,1,2 ;;
esac
