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

# nemopose_launch MODULE ARGS...: run `python -m MODULE ARGS...` on the devices named by
#   GPUS        empty: CPU, one process; "0": one GPU; "0,1,2,3": torchrun, one process per GPU
#   NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT: several machines (torchrun rendezvous)
# The Python side reads RANK/WORLD_SIZE/LOCAL_RANK (nemopose.distributed).
nemopose_launch() {
    local module="$1"; shift
    local gpus="${GPUS:-}"
    gpus="${gpus// /}"
    local nnodes="${NNODES:-1}"
    if [[ -z "$gpus" ]]; then
        if [[ "$nnodes" -gt 1 || "${NPROC_CPU:-1}" -gt 1 ]]; then
            "$PY" -m torch.distributed.run --nnodes="$nnodes" --node_rank="${NODE_RANK:-0}" \
                --nproc_per_node="${NPROC_CPU:-1}" --master_addr="${MASTER_ADDR:-127.0.0.1}" \
                --master_port="${MASTER_PORT:-29500}" -m "$module" --device cpu "$@"
        else
            "$PY" -m "$module" --device cpu "$@"
        fi
        return
    fi
    local n
    n=$(awk -F, '{print NF}' <<< "$gpus")
    if [[ "$n" -eq 1 && "$nnodes" -eq 1 ]]; then
        CUDA_VISIBLE_DEVICES="$gpus" "$PY" -m "$module" --device cuda "$@"
    else
        CUDA_VISIBLE_DEVICES="$gpus" "$PY" -m torch.distributed.run --nnodes="$nnodes" \
            --node_rank="${NODE_RANK:-0}" --nproc_per_node="$n" --master_addr="${MASTER_ADDR:-127.0.0.1}" \
            --master_port="${MASTER_PORT:-29500}" -m "$module" --device cuda "$@"
    fi
}
