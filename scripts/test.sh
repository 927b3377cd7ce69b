#!/usr/bin/env bash
# Set everything up, then run the tests: the unit tests, and every chapter through nbval.
# The chapters are first executed with papermill (profile quick); nbval then runs each executed
# notebook again and checks that every cell prints the same text (a rerun is deterministic) and
# that no cell fails (each chapter asserts what it claims).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
.venv/bin/python -m attnprune.notebooks execute --profile quick
exec .venv/bin/python -m pytest tests _build/papermill/quick \
  --nbval --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg "$@"
