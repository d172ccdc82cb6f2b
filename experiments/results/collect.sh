#!/bin/bash
# Copies a sweep's (or a folder of runs') small result files (no checkpoints, exports or event
# files) from runs/ into the repo, keeping the layout the summary and the notebook read
# (DIR/results.jsonl, DIR/points/NAME/), and stores the bulky ones smaller: each metrics.jsonl
# gzipped, and every run's eval_examples.jsonl packed into one table, DIR/eval_examples.parquet
# (gkd.rundir reads both forms).
# Run from the repo root; collecting a sweep again adds its newly finished points:
#   bash experiments/results/collect.sh runs/testbed_v3/paper experiments/results/testbed_v3/paper
set -euo pipefail
src=${1:?sweep workdir}; dst=${2:?destination}
repo=$PWD
mkdir -p "$dst"; dst=$(cd "$dst" && pwd)
(cd "$src" && find . -path ./logs -prune -o -type f \( -name results.jsonl -o -name 'summary.*' \
  -o -name differences.csv -o -name final_metrics.json -o -name eval_examples.jsonl \
  -o -name metrics.jsonl -o -name config.json \) -not -path '*/checkpoints/*' \
  -not -path '*/export/*' -print0 | xargs -0 -r cp --parents -t "$dst")
find "$dst" -name metrics.jsonl -print0 | xargs -0 -r gzip -9 -n -f
pack='import sys; from gkd import rundir; rundir.pack_examples(sys.argv[1])'
PYTHONPATH=$repo ${PY:-python} -c "$pack" "$dst"
