#!/bin/bash
# ULD vs token-level KD vs SFT on the testbed, 200 supervised steps from the SFT'd student
# (needs the testbed's teacher and student_sft stages, see configs/testbed.py). ~6 min shared CPU.
cd "$(dirname "$0")/../../.." || exit 1
PY=${PY:-python}
T=runs/testbed_v2/teacher/export
S=runs/testbed_v2/student_sft/export
$PY experiments/permuted_teacher.py --teacher=$T --out=runs/uld/permuted_teacher
COMMON="--config.mix.dataset=1 --config.mix.student=0 --config.eval.num_examples=500 --config.train.progress_bar=False"
run() { name=$1; teacher=$2; shift 2
  $PY -m gkd.main --config=configs/testbed.py:stage=gkd,steps=200,teacher=$teacher,student=$S \
    --workdir=runs/uld/$name $COMMON "$@"; }
run sft $T --config.mode=sft --config.eval.at_start=True
run kd_fkl $T --config.objective.divergence=forward_kl
run uld_permuted runs/uld/permuted_teacher --config.objective.cross_tokenizer=uld --config.objective.alpha=0.5
run uld_same $T --config.objective.cross_tokenizer=uld --config.objective.alpha=0.5
