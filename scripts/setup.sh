#!/usr/bin/env bash
# Set up everything attnprune needs, idempotently: a virtual environment in .venv with the pinned
# packages (requirements/constraints.txt), the package itself (editable), and the offline assets
# (the SmolLM2 model, the Lee news corpus, the Llama 3 tokenizer, Jane Austen's novels), and
# Debian's chromium, the browser that the book's browser check (tests/browser) drives.
# A second run only checks and is fast.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="$ROOT/.venv"

find_python() {
  for candidate in "${PYTHON:-}" python3.11 python3 python; do
    if [ -n "$candidate" ] && command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      echo "$candidate"; return 0
    fi
  done
  echo "setup: Python 3.11 or newer is needed (set PYTHON=/path/to/python3.11)" >&2
  return 1
}

if [ ! -x "$VENV/bin/python" ]; then
  PY="$(find_python)"
  echo "setup: creating the virtual environment .venv with $PY"
  "$PY" -m venv "$VENV" || {
    echo "setup: '$PY -m venv' failed; on Debian install python3-venv (apt-get install python3-venv)" >&2
    exit 1; }
fi

stamp="$(cat pyproject.toml requirements/constraints.txt | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$VENV/.attnprune-stamp" 2>/dev/null)" != "$stamp" ]; then
  echo "setup: installing the pinned packages into .venv (first run: about 2 minutes)"
  "$VENV/bin/python" -m pip install --quiet --upgrade "pip>=24"
  "$VENV/bin/python" -m pip install --quiet -c requirements/constraints.txt -e ".[book,dev,browser]"
  echo "$stamp" > "$VENV/.attnprune-stamp"
else
  echo "setup: .venv is up to date"
fi

# The browser check of the built book (tests/browser, run by scripts/book.sh) drives Debian's
# chromium through Playwright; Playwright's own browsers are never downloaded.
CHROMIUM=/usr/bin/chromium
if [ ! -x "$CHROMIUM" ]; then
  echo "setup: installing Debian's chromium (the browser check of the book needs it)"
  if [ "$(id -u)" -eq 0 ]; then as_root=()
  elif [ -t 0 ] && command -v sudo >/dev/null 2>&1; then as_root=(sudo)
  elif command -v sudo >/dev/null 2>&1; then as_root=(sudo -n)
  else as_root=(false)
  fi
  apt_log="$(mktemp)"
  apt_install() { "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y --no-install-recommends chromium >>"$apt_log" 2>&1; }
  if ! apt_install; then
    "${as_root[@]}" apt-get update -qq >>"$apt_log" 2>&1 && apt_install || true
  fi
  if [ ! -x "$CHROMIUM" ]; then
    tail -n 5 "$apt_log" >&2; rm -f "$apt_log"
    echo "setup: Chromium is missing: install Debian's package as root (apt-get install --no-install-recommends chromium), then rerun" >&2
    exit 1
  fi
  rm -f "$apt_log"
fi

echo "setup: checking the offline assets (installing what is missing)"
"$VENV/bin/python" -m attnprune.llm.assets install
echo "setup: done (activate with: source .venv/bin/activate)"
