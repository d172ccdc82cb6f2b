#!/bin/bash
# Copies a sweep's small result files (no checkpoints, exports or event files) from runs/ into the
# repo, keeping the layout the summary and the notebook read (DIR/results.jsonl, DIR/points/NAME/):
#   bash experiments/results/collect.sh runs/testbed_v3/paper experiments/results/testbed_v3/paper
set -euo pipefail
src=${1:?sweep workdir}; dst=${2:?destination}
mkdir -p "$dst"; dst=$(cd "$dst" && pwd)
cd "$src"
find . -path ./logs -prune -o -type f \( -name results.jsonl -o -name 'summary.*' -o -name differences.csv \
  -o -name final_metrics.json -o -name eval_examples.jsonl -o -name metrics.jsonl -o -name config.json \) \
  -not -path '*/checkpoints/*' -not -path '*/export/*' -print0 | xargs -0 -r cp --parents -t "$dst"
