# Sourced by build_book.sh and test.sh: create .venv with Python 3.11 (or python3) and install
# requirements.txt into it, skipping the install when nothing it depends on has changed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
if [[ ! -x .venv/bin/python ]]; then
  echo "==> creating .venv with $("$PYTHON" --version)"
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.requirements.sha256
want=$(cat requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
  echo "==> installing requirements into .venv (the first time takes a few minutes)"
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -r requirements.txt
  echo "$want" > "$stamp"
fi
# shellcheck disable=SC1091
source .venv/bin/activate
# Data and trained models of the book live in _build/cache unless SFAM_BOOK_CACHE says otherwise,
# so that every chapter, papermill, nbval and the book build share one copy and train each model once.
export SFAM_BOOK_CACHE="${SFAM_BOOK_CACHE:-$ROOT/_build/cache}"
