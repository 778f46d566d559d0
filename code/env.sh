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

# nemopose_opt FLAG VALUE: append FLAG VALUE to the array `args` when VALUE is set. The drivers
# pass only the variables a user set; Python owns the defaults (the config dataclasses, shown
# by --help) and validates every value, yes/no included.
nemopose_opt() {
    if [[ -n "$2" ]]; then args+=("$1" "$2"); fi
}

# nemopose_launch MODULE ARGS...: run `python -m MODULE ARGS... --device cpu|cuda` on the
# devices named by the drivers' variables:
#   GPUS        empty: CPU, one process; "0": one GPU; "0,1,2,3" (or "0, 1, 2, 3"): torchrun,
#               one process per GPU
#   NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT: several machines (torchrun's rendezvous);
#               run the driver on every machine
# The Python side reads RANK / WORLD_SIZE / LOCAL_RANK (nemopose.distributed).
nemopose_launch() {
    local module="$1"; shift
    local gpu_list n_gpus nnodes="${NNODES:-1}" device
    IFS=', ' read -r -a gpu_list <<< "${GPUS:-}"
    n_gpus=${#gpu_list[@]}
    if (( n_gpus == 0 )); then
        device=cpu
        # On a shared CPU, OpenMP threads spinning at barriers slow everything 2-5x whenever
        # another process competes for the cores; passive waiting costs little when idle.
        export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
    else
        device=cuda
        export CUDA_VISIBLE_DEVICES="$(IFS=,; echo "${gpu_list[*]}")"
    fi
    if (( n_gpus > 1 || nnodes > 1 )); then
        local nproc=$(( n_gpus > 0 ? n_gpus : 1 ))
        echo "[launch] torchrun: $nnodes machine(s) x $nproc process(es) on ${GPUS:-CPU}" >&2
        "$PY" -m torch.distributed.run --nnodes "$nnodes" --node_rank "${NODE_RANK:-0}" \
            --nproc_per_node "$nproc" --master_addr "${MASTER_ADDR:-127.0.0.1}" \
            --master_port "${MASTER_PORT:-29500}" -m "$module" "$@" --device "$device"
    else
        echo "[launch] one process on ${GPUS:+GPU }${GPUS:-CPU}" >&2
        "$PY" -m "$module" "$@" --device "$device"
    fi
}
