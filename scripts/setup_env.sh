# Sourced by build_book.sh and test.sh: create .venv with Python 3.11 (or python3) and install
# requirements.txt into it, skipping the install when nothing it depends on has changed; install Debian's
# Chromium for the browser test when it is missing.
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
# The browser test (browser_tests/, run by test.sh) drives Debian's Chromium; install it with apt-get when it is
# missing (as root, or through sudo without a password). test.sh sets SFAM_NEEDS_BROWSER=1: there a missing
# Chromium is an error; for build_book.sh it is only a note.
if [[ ! -x ${SFAM_CHROMIUM:-/usr/bin/chromium} ]]; then
  _sudo=()
  if [[ $(id -u) != 0 ]] && command -v sudo >/dev/null && sudo -n true 2>/dev/null; then _sudo=(sudo -n); fi
  if command -v apt-get >/dev/null && { [[ $(id -u) == 0 ]] || (( ${#_sudo[@]} )); }; then
    echo "==> installing Debian's chromium and chromium-driver with apt-get (for the browser test)"
    "${_sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    "${_sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      chromium chromium-driver >/dev/null
  elif [[ ${SFAM_NEEDS_BROWSER:-0} == 1 ]]; then
    echo "error: the browser test needs Chromium at /usr/bin/chromium, and it cannot be installed here (apt-get" \
         "needs root or passwordless sudo): run 'sudo apt-get install chromium chromium-driver', or set" \
         "SFAM_CHROMIUM to a Chromium binary" >&2
    exit 1
  else
    echo "==> note: no Chromium at /usr/bin/chromium; only the browser test of scripts/test.sh needs it"
  fi
  unset _sudo
fi
# shellcheck disable=SC1091
source .venv/bin/activate
# Data and trained models of the book live in _build/cache unless SFAM_BOOK_CACHE says otherwise,
# so that every chapter, papermill, nbval and the book build share one copy and train each model once.
export SFAM_BOOK_CACHE="${SFAM_BOOK_CACHE:-$ROOT/_build/cache}"
