#!/usr/bin/env bash
# Set everything up, execute every chapter with papermill (profile: ${PROFILE:-quick}, offline
# model and text, CPU) and build the HTML book with warnings as errors.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" HF_DATASETS_OFFLINE="${HF_DATASETS_OFFLINE:-1}"
exec .venv/bin/python -m attnprune.notebooks book --profile "${PROFILE:-quick}"
