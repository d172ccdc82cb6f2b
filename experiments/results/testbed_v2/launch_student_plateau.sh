#!/bin/bash
# Follow-up to launch.sh: finishes the `curves` sweep, then trains the student stage for 4,000 steps
# (validation eval every 500) to find where SFT alone plateaus: the 1,500-step student was still
# rising. Skips finished work, so rerunning continues a killed run:
#   nohup env PY=.venv/bin/python bash experiments/results/testbed_v2/launch_student_plateau.sh \
#     > runs/testbed_v2/plateau.log 2>&1 &
set -euo pipefail
export PYTHONPATH=$PWD XLA_FLAGS="--xla_force_host_platform_device_count=1"
PY=${PY:-python}
R=runs/testbed_v2
$PY -m gkd.sweep --config=configs/testbed.py:sweep=curves --workdir=$R/curves --parallel=1
[ -f "$R/student_sft_4k/final_metrics.json" ] || $PY -m gkd.main --config=configs/testbed.py:stage=student,steps=4000 \
  --workdir=$R/student_sft_4k --config.train.progress_bar=false --config.eval.every=500 --config.eval.num_examples=500
