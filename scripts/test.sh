#!/usr/bin/env bash
# The project's test command: the fast suite plus small versions of the slow end-to-end tests.
# Runs the set-up's .venv directly, so it works without activating it.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python -m pytest -q -n 2 --dist loadfile tests "$@"
