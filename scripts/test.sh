#!/usr/bin/env bash
# The project's test command: the fast suite plus small versions of the slow end-to-end tests.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pytest -q -n 2 --dist loadfile tests "$@"
