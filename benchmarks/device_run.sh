#!/usr/bin/env bash
# The one command run on a lent GPU machine (an image with torch but without papermill or nbval, which travel
# as wheels in .whl/), from the repository root, with the trained synthetic models carried in _build/cache/models.
# Its logs are kept in benchmarks/results/ (explainers_gpu.*, test_gpu.txt).
#   1. benchmarks/explainers.py, rows 1-4 on the GPU; row 4 is the full 10,000-episode protocol, all methods;
#   2. scripts/test_gpu.sh --no-setup: chapters 5-7 (they use the GPU), then chapters 1-2 (nbval's cells).
# DEVICE=cpu QUICK=1 rehearses the same steps on a CPU with small sizes (the GPU script then stops at its check).
set -uo pipefail
OUT="${OUT:-_build/device}"
DEVICE="${DEVICE:-cuda}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 SFAM_BOOK_CACHE="$PWD/_build/cache" PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [[ -d .whl ]]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "error: the carried wheels did not install" >&2; exit 1; }
  export PYTHONPATH="$PYTHONPATH:/tmp/site" PATH="/tmp/site/bin:$PATH"
fi
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1; python3 -c "import torch; print('torch', torch.__version__)"; nproc; } | tee "$OUT/machine.txt"

if [[ -n ${QUICK:-} ]]; then bench=(--batches 1,4 --repeats 2 --warmup 1 --maps 2000 --episodes 20)
else bench=(--repeats 10 --warmup 3 --episodes 10000); fi
timeout "${BENCH_TIMEOUT:-250}" python3 benchmarks/explainers.py --device "$DEVICE" "${bench[@]}" --output "$OUT/explainers_gpu.json" 2>&1 \
  | grep -v -E "^(USDT|ERROR|\[W).*(profiler|Profiler|gpuGetDeviceCount|CPUAllocator)" | tee "$OUT/explainers_gpu.txt"

# chapters 5-7 use the GPU; 1-2 hold the cells nbval compares (3-4 run on the CPU, as on any machine)
for chapters in "05 06 07" "01 02"; do
  [[ $chapters == "05 06 07" ]] && limit="${CHAPTER_TIMEOUT:-200}" || limit="${CHAPTER_TIMEOUT_2:-110}"
  timeout "$limit" bash scripts/test_gpu.sh --no-setup --chapters "$chapters" 2>&1 | tee -a "$OUT/test_gpu.txt"
  echo "scripts/test_gpu.sh --chapters \"$chapters\": exit ${PIPESTATUS[0]}" | tee -a "$OUT/test_gpu.txt"
done
