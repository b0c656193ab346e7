#!/usr/bin/env bash
# Set up .venv and build the book into _build/html, executing every chapter with its default parameters.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"
jupyter-book build . -W --keep-going
echo "==> the book is at $ROOT/_build/html/index.html"
