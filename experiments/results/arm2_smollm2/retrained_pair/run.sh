#!/bin/bash
# Arm 2 on the retrained pair (plan.md, seventh and eighth amendments), from the repo root:
#   setsid nohup bash experiments/results/arm2_smollm2/retrained_pair/run.sh > runs/arm2_smollm2/chain.out 2>&1 &
# teacher -> student -> gate (must pass) -> the sweep dir seeded with the first pair's committed
# points -> the remaining points in the README's order (H1 and H2's seed 2 first, then the pair
# check, then the rest of seed 2) -> the sweep itself (skips what is finished) -> test evals.
# Every step skips or resumes what is done, so rerunning it continues a killed run (a point
# interrupted mid-way resumes from its last checkpoint).
set -uo pipefail
export PY=${PY:-.venv/bin/python} EVERY=10 WARMUP=1200 PYTHONPATH=$PWD
L=experiments/results/arm2_smollm2/launch.sh
R=runs/arm2_smollm2; M=$R/methods_every10_sft1200
D=experiments/results/arm2_smollm2/methods_every10_sft1200
log() { echo "$(date -u +%FT%T) $*" >> $R/chain.log; }
mkdir -p $R
bash $L teacher >> $R/teacher.log 2>&1 || { log "teacher failed"; exit 1; }
bash $L student >> $R/student.log 2>&1 || { log "student failed"; exit 1; }
bash $L gate >> $R/gate.log 2>&1 || { log "gate failed"; exit 1; }
ok=$($PY -c "
import json
g = json.load(open('$M/gate.json'))
print(int(g['verdict'] == 'can_rank' and g['teacher_score'] - g['student_score'] >= 0.15))")
log "gate: ok=$ok"
[ "$ok" = 1 ] || exit 1
mkdir -p $M/points
for p in $D/points/*/; do n=$(basename "$p"); [ -d "$M/points/$n" ] || cp -r "$p" "$M/points/$n"; done
cp -n $D/eval_examples.parquet $M/
run() {  # workdir method seed: one point of the sweep, run (or resumed, or skipped) in workdir
  $PY - "$@" >> $R/priority.log 2>&1 <<'PY'
import os, sys
from configs import arm2_smollm2 as a
from gkd import sweep
from gkd.eval import compare
workdir, method, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
c = "configs/arm2_smollm2.py:every=10,warmup=1200,sweep=methods"
names = compare.method_names(a.METHODS)
p = next(p for p in sweep.load_sweep(c) if names[compare.method_key(p)] == method and p["seed"] == seed)
n = sweep.point_name(p)
os.makedirs(f"{workdir}/logs", exist_ok=True)
row = sweep.run_point(c, p, f"{workdir}/points/{n}", f"{workdir}/logs/{n}.log")
if workdir.endswith("check_retrained_pair"):  # compare.py reads the check through its results
  sweep.write_results(workdir, [row])
print(row["status"], n, flush=True)
PY
  log "point $2 seed $3 in $1: exit $?"
}
for m in gkd_jsd0.9 seq_kd supervised_kd; do run $M $m 2; done
run $R/check_retrained_pair gkd_jsd0.9 0
for m in sft gkd_fkl gkd_rkl mixed_jsd0.9; do run $M $m 2; done
bash $L methods >> $M.log 2>&1; log "methods exit $?"
bash $L tests >> $R/tests.log 2>&1; log "tests exit $?"
