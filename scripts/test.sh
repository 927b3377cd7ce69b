#!/usr/bin/env bash
# Set everything up, then run the tests: ruff (lint, format), the unit tests, and every chapter through nbval.
# The chapters are first executed with papermill (profile quick); nbval then runs each executed
# notebook again and checks that no cell fails (each chapter asserts what it claims) and that every
# cell prints the same text as before (a rerun is deterministic). A chapter that fails to execute
# fails the command, after the tests have run.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh || exit 1
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
echo "test: ruff (lint and format)"
.venv/bin/ruff check . && .venv/bin/ruff format --check . || { echo "test: ruff found problems (see above)" >&2; exit 1; }
.venv/bin/python -m attnprune.notebooks execute --profile quick
executed=$?
.venv/bin/python -m pytest tests _build/papermill/quick \
  --nbval --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg "$@"
tested=$?
if [ "$executed" -ne 0 ]; then echo "test: some chapters failed to execute (see above)" >&2; exit 1; fi
exit "$tested"
