# Sourced by the drivers: sets up the environment they run in.
#   REPO        the repository root
#   PY          the Python of the project's virtual environment (created on first use)
#   PYTHONPATH  includes code/ so that `python -m nemopose.<tool>` works
# glibc malloc tuning: keep large freed blocks instead of returning them to the OS, so that
# big tensors are not page-faulted in again at every step (2-4x faster on CPU here; see
# benchmarks/). Set NEMOPOSE_NO_MALLOC_TUNING=1 to disable.
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -n "${NEMOPOSE_PYTHON:-}" ]]; then
    PY="$NEMOPOSE_PYTHON"
else
    bash "$REPO/code/setup_env.sh"
    PY="${VENV:-$REPO/.venv}/bin/python"
fi
export PYTHONPATH="$REPO/code${PYTHONPATH:+:$PYTHONPATH}"
if [[ -z "${NEMOPOSE_NO_MALLOC_TUNING:-}" ]]; then
    export MALLOC_MMAP_THRESHOLD_="${MALLOC_MMAP_THRESHOLD_:-17179869184}"
    export MALLOC_TRIM_THRESHOLD_="${MALLOC_TRIM_THRESHOLD_:-17179869184}"
fi
export PYTHONUNBUFFERED=1
