#!/usr/bin/env bash
# Set everything up, execute every chapter with papermill (profile: ${PROFILE:-quick}, offline
# model and text, CPU) and build the HTML book with warnings as errors; then check every page of
# the built book in Chromium (tests/browser/test_book_pages.py: math typeset, images, links,
# references, no build path, no traceback), saving a screenshot of each in _build/screenshots/.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" HF_DATASETS_OFFLINE="${HF_DATASETS_OFFLINE:-1}"
.venv/bin/python -m attnprune.notebooks book --profile "${PROFILE:-quick}"
echo "book: checking every page in a browser (screenshots in _build/screenshots/)"
rm -rf _build/screenshots
.venv/bin/python -m pytest tests/browser/test_book_pages.py -q || {
  echo "book: the browser check of the book found problems (see above; screenshots in _build/screenshots/)" >&2
  exit 1; }
echo "book: every page passed the browser check; the book is at $ROOT/_build/html/index.html"
