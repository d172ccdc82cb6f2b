#!/usr/bin/env bash
# The gkd workloads besides the side-by-side one (experiments/benchmarks/side_by_side.py), one after
# another into experiments/results/bench_workloads.jsonl and bench_sampling.jsonl: supervised KD
# (λ=0), mixed (λ=0.5), batch 32, the plain (unchunked) loss, and the sampler's decode at batch 1
# and 32 against its roofline. About 15 minutes on a quiet 2-core CPU.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PYTHONPATH=$PWD
PY=${PYTHON:-python}
OUT=experiments/results/bench_workloads.jsonl
B=experiments/benchmarks
$PY $B/gkd_step.py --lmbda 0 --steps 3 --out $OUT --label "lambda=0"
$PY $B/gkd_step.py --lmbda 0.5 --steps 4 --out $OUT --label "lambda=0.5"
$PY $B/gkd_step.py --batch 32 --steps 2 --out $OUT --label "batch=32"
$PY $B/gkd_step.py --chunk 0 --steps 3 --out $OUT --label "plain loss"
$PY $B/sampling_throughput.py --batches 1,32 --nocache_batches none \
    --out experiments/results/bench_sampling.jsonl
