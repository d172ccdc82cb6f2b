#!/bin/bash
# SmolLM2-135M-Instruct distilled into a 3-layer student on Shakespeare (configs/smollm2_shakespeare.py),
# from the repo root; every step skips what is finished, so rerunning continues a killed run:
#   nohup env PY=.venv/bin/python bash experiments/results/smollm2_shakespeare/launch.sh > runs/smollm2_shakespeare/launch.log 2>&1 &
set -euo pipefail
export PYTHONPATH=$PWD XLA_FLAGS="--xla_force_host_platform_device_count=1"
PY=${PY:-python}
R=runs/smollm2_shakespeare
C=configs/smollm2_shakespeare.py
mkdir -p $R
train() {  # workdir, then gkd.main args; skipped when finished
  [ -f "$1/final_metrics.json" ] || $PY -m gkd.main --workdir="$1" "${@:2}" --config.train.progress_bar=false
}
train $R/sft --config=$C:stage=sft
evaluate() {  # workdir, config args, flags: one step at a negligible learning rate is an eval
  train "$1" --config=$C:stage=gkd,steps=1$2 "${@:3}" --config.optim.learning_rate=1e-12 \
    --config.mix.student=0.0 --config.mix.dataset=1.0
}
evaluate $R/teacher_test ,student=gguf  # the teacher itself in the student's slot
$PY -m gkd.sweep --config=$C --workdir=$R/methods --parallel=1
# The SFT students trained without the teacher: these evals add its metrics (held-out KLs, its
# log-likelihood of their samples).
evaluate $R/sft_scored "" --config.student.path=$R/sft/export
evaluate $R/sft_continued_scored "" "--config.student.path=$R/methods/points/mode=sft,dataset=1.0,student=0.0,seed=0/export"
