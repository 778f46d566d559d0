#!/usr/bin/env bash
# TrainNeMo.sh: train NeMo, one network + neural-mesh banks per category (code/METHOD.md §9). All logic
# lives in `python -m nemopose.train` (run it with --help for every option).
#
# Checkpoints go to $EXPROOT/NeMo_$MESH_DIMENSIONS/saved_model_<cat>_<epoch>.pth; a rerun
# resumes every category from its last checkpoint (finished categories are skipped). Every
# variable below can be set from the environment, e.g.
#   GPUS=0,1,2,3 CATEGORIES="car bus" ./TrainNeMo.sh                      # 4 GPUs, faithful
#   PRESET=demo ./TrainNeMo.sh                                           # synthetic CPU demo
#   GPUS=0 PRECISION=bf16 ./TrainNeMo.sh                                 # bfloat16 mixed precision
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
PRECISION="${PRECISION:-}"                   # empty: the preset's (fp32); bf16: bfloat16 mixed precision
SEED="${SEED:-}"                             # empty: the preset's (0); seeds the network, banks and batches
DOWNLOAD="${DOWNLOAD:-}"                     # ImageNet weights not in the torch cache: auto (empty) downloads | no
DOWNLOAD_MIRROR="${DOWNLOAD_MIRROR:-}"       # base URL or folder holding resnet50-0676ba61.pth
NNODES="${NNODES:-1}"                        # machines (multi-machine: run this script on each)
NODE_RANK="${NODE_RANK:-0}"                  # this machine's rank
MASTER_ADDR="${MASTER_ADDR:-127.0.0.1}"      # rendezvous host (machine 0)
MASTER_PORT="${MASTER_PORT:-29500}"          # rendezvous port
EXTRA_ARGS="${EXTRA_ARGS:-}"                 # more flags for nemopose.train, e.g. "--lr-schedule step"

source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/code/env.sh"

args=(--dataroot "$DATAROOT" --exproot "$EXPROOT" --mesh-d "$MESH_DIMENSIONS"
      --categories "$CATEGORIES" --preset "$PRESET")
nemopose_opt --total-epochs "$TOTAL_EPOCHS"
nemopose_opt --batch-size "$BATCH_SIZE"
nemopose_opt --lr "$LEARNING_RATE"
nemopose_opt --precision "$PRECISION"
nemopose_opt --download "$DOWNLOAD"
nemopose_opt --download-mirror "$DOWNLOAD_MIRROR"
nemopose_opt --seed "$SEED"
read -r -a extra <<< "$EXTRA_ARGS"
args+=("${extra[@]}")

nemopose_launch nemopose.train "${args[@]}"
