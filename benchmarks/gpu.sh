#!/usr/bin/env bash
# One GPU benchmark, one table (benchmarks/bench_gpu.py): the pose solver at batch 64, 1024
# and 4096, CPU-vs-GPU parity on 16 images, training images/s (fp32, bf16) at 256x672 batch
# 108 and the data loader. A few minutes on one GPU; without CUDA it says so and exits 0.
#
#   bash benchmarks/gpu.sh                          # the project's .venv when there is one
#   NEMOPOSE_PYTHON=python3 bash benchmarks/gpu.sh  # any Python with torch (offline hosts)
#
# Never creates a virtual environment. Extra arguments go to bench_gpu.py (see --help).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -n "${NEMOPOSE_PYTHON:-}" ]]; then
    PY="$NEMOPOSE_PYTHON"
elif [[ -x "$REPO/.venv/bin/python" ]]; then
    PY="$REPO/.venv/bin/python"
else
    PY=python3
fi
if ! "$PY" -c "import torch" 2>/dev/null; then
    echo "error: $PY cannot import torch; set NEMOPOSE_PYTHON to a Python with torch installed" >&2
    exit 2
fi
export PYTHONPATH="$REPO/code${PYTHONPATH:+:$PYTHONPATH}"
export MALLOC_MMAP_THRESHOLD_="${MALLOC_MMAP_THRESHOLD_:-17179869184}"
export MALLOC_TRIM_THRESHOLD_="${MALLOC_TRIM_THRESHOLD_:-17179869184}"
export PYTHONUNBUFFERED=1
exec "$PY" "$REPO/benchmarks/bench_gpu.py" "$@"
