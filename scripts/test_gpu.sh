#!/usr/bin/env bash
# The book on a GPU. Every chapter is executed with papermill and the GPU parameters of .ci/gpu/<chapter>.yml
# (more episodes and pairs; device "cuda" where a chapter has a device parameter). Then nbval, in lax mode,
# re-runs the chapters whose text must not depend on the device (cells tagged nbval-check-output, e.g. the
# derivations of chapters 1-2) and compares those cells with the committed outputs, which come from the CPU
# run. Every other cell has already had to run without error in the papermill pass. The unit tests that need
# CUDA run first.
#
#   scripts/test_gpu.sh                    # set up .venv as scripts/test.sh does, then run
#   scripts/test_gpu.sh --no-setup         # use the python on PATH (with the packages of requirements.txt)
#   scripts/test_gpu.sh --chapters "05 07" # only these chapters (papermill and nbval)
#
# Executed chapters go to _build/gpu/. Without a CUDA device it stops at once with one line and exit code 2.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
setup=1
chapters=""
while (( $# )); do
  case "$1" in
    --no-setup) setup=0 ;;
    --chapters) chapters="${2:?--chapters needs a list such as \"01 05\"}"; shift ;;
    -h|--help) sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "error: unknown option $1 (use --no-setup, --chapters \"01 05\" or --help)" >&2; exit 2 ;;
  esac
  shift
done
cd "$ROOT"
source "$HERE/stages.sh"

if (( setup )); then
  stage "setting up .venv"
  source "$HERE/setup_env.sh"
else
  export SFAM_BOOK_CACHE="${SFAM_BOOK_CACHE:-$ROOT/_build/cache}"
fi

stage "checking for a CUDA device"
python - <<'PY' || exit 2
import sys
import torch
if not torch.cuda.is_available():
    build = torch.version.cuda or "none (a CPU-only build)"
    sys.exit(f"error: no CUDA device is available (torch {torch.__version__}, CUDA build: {build}); "
             "scripts/test_gpu.sh needs a GPU. On a CPU machine run scripts/test.sh.")
print(f"torch {torch.__version__} on {torch.cuda.get_device_name(0)}")
PY

stage "unit tests that need CUDA (skipped on a CPU machine)"
python -m pytest tests -q -p no:cacheprovider -k "gpu or cuda"

selected=()
for nb in notebooks/*.ipynb; do
  name=$(basename "$nb" .ipynb)
  if [[ -z $chapters ]] || [[ " $chapters " == *" ${name:0:2} "* ]]; then selected+=("$nb"); fi
done
(( ${#selected[@]} )) || { echo "error: --chapters \"$chapters\" matches no chapter in notebooks/" >&2; exit 2; }

mkdir -p _build/gpu
for nb in "${selected[@]}"; do
  name=$(basename "$nb" .ipynb)
  stage "papermill on the GPU: $name"
  params=".ci/gpu/$name.yml"
  extra=()
  [[ -f $params ]] && extra=(-f "$params")
  papermill --cwd notebooks --kernel python3 --no-progress-bar "${extra[@]}" "$nb" "_build/gpu/$name.ipynb"
done

checked=()
for nb in "${selected[@]}"; do
  grep -q '"nbval-check-output"' "$nb" && checked+=("$nb")
done
if (( ${#checked[@]} )); then
  stage "nbval (lax): the device-independent cells match the committed CPU outputs"
  python -m pytest --nbval-lax "${checked[@]}" --nbval-current-env \
    --nbval-sanitize-with .ci/nbval_sanitize.cfg -p no:cacheprovider -q
fi
