#!/usr/bin/env bash
# TrainNeMo.sh: train NeMo, one network + neural-mesh banks per category (SPEC 9). All logic
# lives in `python -m nemopose.train` (run it with --help for every option).
#
# Checkpoints go to $EXPROOT/NeMo_$MESH_DIMENSIONS/saved_model_<cat>_<epoch>.pth; a rerun
# resumes every category from its last checkpoint (finished categories are skipped). Every
# variable below can be set from the environment, e.g.
#   GPUS=0,1,2,3 CATEGORIES="car bus" ./TrainNeMo.sh                      # 4 GPUs, faithful
#   PRESET=demo ./TrainNeMo.sh                                           # synthetic CPU demo
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=host0 GPUS=0,1,2,3 ./TrainNeMo.sh   # on each machine
set -euo pipefail

DATAROOT="${DATAROOT:-./data}"               # prepared datasets (PrepareData.sh)
EXPROOT="${EXPROOT:-./exp}"                  # experiments (checkpoints, logs)
GPUS="${GPUS-}"                              # empty: CPU; "0": one GPU; "0,1,2": DDP over these GPUs
MESH_DIMENSIONS="${MESH_DIMENSIONS:-single}" # single | multi
CATEGORIES="${CATEGORIES:-all}"              # "all" (every prepared category) or e.g. "car bus"
PRESET="${PRESET:-faithful}"                 # faithful (real data, the paper) | demo (synthetic, CPU)
TOTAL_EPOCHS="${TOTAL_EPOCHS:-}"             # empty: the preset's (faithful 800)
BATCH_SIZE="${BATCH_SIZE:-}"                 # empty: the preset's (faithful 108); the GLOBAL batch
LEARNING_RATE="${LEARNING_RATE:-}"           # empty: the preset's (faithful 1e-4)
NNODES="${NNODES:-1}"                        # machines (multi-machine: run this script on each)
NODE_RANK="${NODE_RANK:-0}"                  # this machine's rank
MASTER_ADDR="${MASTER_ADDR:-127.0.0.1}"      # rendezvous host (machine 0)
MASTER_PORT="${MASTER_PORT:-29500}"          # rendezvous port
EXTRA_ARGS="${EXTRA_ARGS:-}"                 # more flags for nemopose.train, e.g. "--lr-schedule step"

source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/code/env.sh"

args=(--dataroot "$DATAROOT" --exproot "$EXPROOT" --mesh-d "$MESH_DIMENSIONS"
      --categories "$CATEGORIES" --preset "$PRESET")
[[ -n "$TOTAL_EPOCHS" ]] && args+=(--total-epochs "$TOTAL_EPOCHS")
[[ -n "$BATCH_SIZE" ]] && args+=(--batch-size "$BATCH_SIZE")
[[ -n "$LEARNING_RATE" ]] && args+=(--lr "$LEARNING_RATE")
read -r -a extra <<< "$EXTRA_ARGS"
args+=("${extra[@]}")

IFS=', ' read -r -a gpu_list <<< "$GPUS"
n_gpus=${#gpu_list[@]}
if (( n_gpus == 0 )); then
    args+=(--device cpu)
    # On a shared CPU, OpenMP threads spinning at barriers slow training 2-5x whenever another
    # process competes for the cores; passive waiting costs little when the machine is idle.
    export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
else
    export CUDA_VISIBLE_DEVICES="$(IFS=,; echo "${gpu_list[*]}")"
    args+=(--device cuda)
fi

if (( n_gpus > 1 || NNODES > 1 )); then
    nproc=$(( n_gpus > 0 ? n_gpus : 1 ))
    echo "TrainNeMo.sh: torchrun, $NNODES machine(s) x $nproc process(es), GPUs '${GPUS}'" >&2
    exec "$PY" -m torch.distributed.run --nnodes "$NNODES" --node_rank "$NODE_RANK" \
        --nproc_per_node "$nproc" --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT" \
        -m nemopose.train "${args[@]}"
fi
echo "TrainNeMo.sh: one process on ${GPUS:+GPU $GPUS}${GPUS:-CPU}" >&2
exec "$PY" -m nemopose.train "${args[@]}"
