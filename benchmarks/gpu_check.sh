#!/usr/bin/env bash
# One command for a GPU machine: is the CUDA path right, and how fast? At most ~5 minutes on
# one H200, offline, under any Python with torch. Sections (each under its own time limit; a
# failing or timed-out section is reported and the next one runs; in order of importance):
#   1. versions and the GPU
#   2. CUDA checks: benchmarks/cuda_checks.py (no pytest needed): Triton vs PyTorch, the
#      z-buffer vs the CPU rasteriser, CUDA graph vs eager poses, CPU vs CUDA poses on 16
#      images (same initial pose 16/16, median <= 0.1 deg)
#   3. the solver table (bench_gpu.py): ms/image at batch 64, 1024, 4096 (targets <= 1 ms at
#      1024, <= 0.3 ms at 4096), eager steps at 1024, the PyTorch backend at 256; per row the
#      backend and graph mode used, host syncs per step (target 0), peak memory
#   4. the drivers with GPUS=0 on the tiny synthetic set, in a temporary DATAROOT/EXPROOT:
#      PrepareData.sh (SYNTHETIC=yes SYNTHETIC_SIZE=tiny), TrainNeMo.sh (PRESET=demo,
#      TOTAL_EPOCHS=2), InferenceNeMo.sh (TOTAL_EPOCHS=20)
#   5. bf16 training images/s over a warm epoch of 50 batches (256x672, batch 108)
#   6. tests/test_score_triton.py on CUDA when pytest is installed (said and skipped if not)
# Everything also goes to $OUT/gpu_check.log when OUT is set. Without CUDA it says so and
# exits 0. Exit status: 0 when every section that ran passed, 1 otherwise.
#
#   NEMOPOSE_PYTHON=python3 bash benchmarks/gpu_check.sh
#   GPU_CHECK_BUDGET=290      seconds for all sections together (default 290)
#   GPU_CHECK_CATEGORIES=car  categories of the driver section (default: the tiny set of the tests, car aeroplane chair)
#   GPU_CHECK_ON_CPU=yes      run every section on the CPU with small settings (tests this script)
set -uo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO" || exit 2
if [[ -n "${NEMOPOSE_PYTHON:-}" ]]; then PY="$NEMOPOSE_PYTHON"
elif [[ -x "$REPO/.venv/bin/python" ]]; then PY="$REPO/.venv/bin/python"
else PY=python3; fi
export NEMOPOSE_PYTHON="$PY"
export PYTHONPATH="$REPO/code:$REPO/benchmarks${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1
export MALLOC_MMAP_THRESHOLD_="${MALLOC_MMAP_THRESHOLD_:-17179869184}"
export MALLOC_TRIM_THRESHOLD_="${MALLOC_TRIM_THRESHOLD_:-17179869184}"
BUDGET="${GPU_CHECK_BUDGET:-290}"
CATS="${GPU_CHECK_CATEGORIES:-car aeroplane chair}"
ON_CPU="${GPU_CHECK_ON_CPU:-no}"
START=$(date +%s)
RESULTS=()
export PY REPO BUDGET CATS ON_CPU START

elapsed() { echo $(( $(date +%s) - START )); }
remaining() { echo $(( BUDGET - $(elapsed) )); }

# section NAME CAP COMMAND...: run COMMAND under min(CAP, what is left of the budget) seconds.
section() {
    local name="$1" cap="$2"; shift 2
    local left; left=$(remaining)
    local limit=$(( cap < left ? cap : left ))
    echo
    echo "=== $name (limit ${limit} s, $(elapsed) s elapsed) ==="
    if (( limit < 15 )); then
        echo "--- $name: SKIPPED (no time left in the ${BUDGET} s budget)"
        RESULTS+=("SKIPPED  $name (no time left)")
        return 0
    fi
    local t0=$SECONDS rc
    # a child bash: the commands may be this script's functions (exported below)
    timeout --kill-after=10 "$limit" bash -c '"$@"' section "$@"
    rc=$?
    local took=$(( SECONDS - t0 )) verdict
    if (( rc == 0 )); then verdict=PASS
    elif (( rc == 124 || rc == 137 )); then verdict="TIMEOUT after ${took} s"
    else verdict="FAIL (exit $rc)"; fi
    echo "--- $name: $verdict (${took} s)"
    RESULTS+=("$verdict  $name (${took} s)")
}

versions() {
    "$PY" - <<'PY'
import importlib, platform, sys
print("python", platform.python_version(), sys.executable)
for name in ("torch", "triton", "numpy", "scipy", "PIL", "torchvision", "pytest"):
    try:
        mod = importlib.import_module(name)
        print(f"{name:12s}", getattr(mod, "__version__", "?"))
    except Exception as exc:
        print(f"{name:12s} missing ({type(exc).__name__})")
import torch
print("CUDA build  ", torch.version.cuda, "| available:", torch.cuda.is_available())
for i in range(torch.cuda.device_count() if torch.cuda.is_available() else 0):
    p = torch.cuda.get_device_properties(i)
    print(f"cuda:{i}      {p.name}, {p.total_memory / 2 ** 30:.0f} GiB, compute capability {p.major}.{p.minor}")
PY
    command -v nvidia-smi >/dev/null && timeout 10 nvidia-smi -L
    return 0
}

has_cuda() { "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; }
has_pytest() { "$PY" -c "import pytest" 2>/dev/null; }

pytest_files() {
    if has_pytest; then
        "$PY" -m pytest -q -x -p no:cacheprovider "$@"
    else
        echo "pytest is not installed for $PY: the pytest files are skipped (cuda_checks.py above ran the CUDA checks)"
    fi
}

drivers() {
    local tmp; tmp=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check_drivers.XXXXXX") || return 1
    local gpus=0 rc=0
    [[ "$ON_CPU" == yes ]] && gpus=""
    echo "DATAROOT=$tmp/data EXPROOT=$tmp/exp CATEGORIES=\"$CATS\" GPUS=$gpus"
    run_driver() {
        local name="$1"; shift
        local t0=$SECONDS left; left=$(remaining)
        (( left > 90 )) && left=90
        if (( left < 10 )); then echo "[drivers] $name: no time left"; return 124; fi
        env DATAROOT="$tmp/data" EXPROOT="$tmp/exp" CATEGORIES="$CATS" GPUS="$gpus" "$@" \
            timeout --kill-after=5 "$left" bash "$REPO/$name" > "$tmp/$name.log" 2>&1
        local r=$?
        tail -n 15 "$tmp/$name.log"
        echo "[drivers] $name: exit $r after $(( SECONDS - t0 )) s"
        return $r
    }
    run_driver PrepareData.sh SYNTHETIC=yes SYNTHETIC_SIZE=tiny || rc=1
    (( rc == 0 )) && { run_driver TrainNeMo.sh PRESET=demo TOTAL_EPOCHS=2 || rc=1; }
    (( rc == 0 )) && { run_driver InferenceNeMo.sh TOTAL_EPOCHS=20 || rc=1; }
    rm -rf "$tmp"
    return $rc
}

export -f elapsed remaining versions has_cuda has_pytest pytest_files drivers

main() {
    echo "nemopose gpu_check: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname), repo $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?') ($(git -C "$REPO" status --porcelain 2>/dev/null | wc -l) paths differ from it), budget ${BUDGET} s"
    section "versions" 30 versions
    local dev=cuda
    if [[ "$ON_CPU" == yes ]]; then
        dev=cpu
        export TRITON_INTERPRET=1
        echo "GPU_CHECK_ON_CPU=yes: every section on the CPU with small settings (a test of this script)"
    elif ! has_cuda; then
        echo "gpu_check: no CUDA device here (or torch without CUDA): nothing to check on a GPU; exit 0"
        return 0
    fi
    # in order of importance: what is left of the budget goes to the later sections
    if [[ $dev == cuda ]]; then
        section "CUDA checks (cuda_checks.py)" 110 "$PY" benchmarks/cuda_checks.py
        section "solver table (bench_gpu.py)" 110 "$PY" benchmarks/bench_gpu.py --batches 64,1024,4096 \
            --torch-batch 256 --eager-batch 1024 --parity 0 --skip-training
    else
        section "CUDA checks (cuda_checks.py, CPU parts)" 200 "$PY" benchmarks/cuda_checks.py --device cpu \
            --only triton-vs-torch graph-vs-eager cpu-vs-device
        section "solver table (bench_gpu.py, CPU)" 200 "$PY" benchmarks/bench_gpu.py --device cpu --batches 2 \
            --distinct 2 --steps 3 --torch-batch 0 --eager-batch 2 --parity 0 --sync-steps 2 --skip-training
    fi
    section "drivers ($( [[ $dev == cuda ]] && echo GPUS=0 || echo CPU ), tiny synthetic, CATEGORIES=$CATS)" 100 drivers
    if [[ $dev == cuda ]]; then
        section "bf16 training (warm epoch, 50 batches of 108 at 256x672)" 120 "$PY" benchmarks/bench_gpu.py \
            --skip-solver --precisions bf16 --train-iterations 50
        section "pytest on CUDA (tests/test_score_triton.py)" 70 pytest_files tests/test_score_triton.py
    else
        section "training (CPU: 2 batches of 2 at 128x336)" 200 "$PY" benchmarks/bench_gpu.py --device cpu \
            --skip-solver --train-batch 2 --size 128x336 --train-iterations 2 --backbone light --precisions fp32
        echo "(pytest: not run on the CPU by this script; the project's own test runs cover it)"
    fi
    echo
    echo "=== summary ($(elapsed) s) ==="
    local r failed=0
    for r in "${RESULTS[@]}"; do
        echo "  $r"
        [[ "$r" == PASS* || "$r" == SKIPPED* ]] || failed=1
    done
    return $failed
}

if [[ -n "${OUT:-}" ]]; then
    mkdir -p "$OUT"
    main "$@" 2>&1 | tee -a "$OUT/gpu_check.log"
    exit "${PIPESTATUS[0]}"
fi
main "$@"
