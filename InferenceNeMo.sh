#!/usr/bin/env bash
# NeMo inference: extract features, estimate poses, print and save the accuracy table.
#   ./InferenceNeMo.sh                 unoccluded val set (L0)
#   ./InferenceNeMo.sh FGL1_BGL1       an Occluded-PASCAL3D+ level (also FGL2_BGL2, FGL3_BGL3)
# Every variable below can also be set from the environment, e.g. GPUS=0,1 ./InferenceNeMo.sh
set -euo pipefail

DATAROOT="${DATAROOT:-./data}"
EXPROOT="${EXPROOT:-./exp}"
GPUS="${GPUS:-}"                              # empty: CPU; "0": one GPU; "0,1,2,3": torchrun over 4 GPUs
MESH_DIMENSIONS="${MESH_DIMENSIONS:-single}"  # single or multi
CATEGORIES="${CATEGORIES:-all}"               # e.g. "car bus" or all
CHECKPOINT="${CHECKPOINT:-last}"              # epoch (799), last, or a checkpoint file
BATCH_SIZE="${BATCH_SIZE:-8}"                 # feature-extraction batch
SOLVE_BATCH="${SOLVE_BATCH:-64}"              # images whose poses are optimised together
TOTAL_EPOCHS="${TOTAL_EPOCHS:-300}"           # Adam steps of the pose solver
LEARNING_RATE="${LEARNING_RATE:-0.05}"        # Adam learning rate of the pose solver
FUSED="${FUSED:-no}"                          # yes: no feature file, solve straight from the network
EXTRA_ARGS="${EXTRA_ARGS:-}"                  # more flags for python -m nemopose.inference (see --help)
OCC_LEVEL="${1:-${OCC_LEVEL:-}}"

source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/code/env.sh"

fused=()
[[ "$FUSED" == "yes" ]] && fused=(--fused)
# shellcheck disable=SC2086
nemopose_launch nemopose.inference \
    --dataroot "$DATAROOT" --exproot "$EXPROOT" --mesh-d "$MESH_DIMENSIONS" --categories $CATEGORIES \
    --occ-level "$OCC_LEVEL" --checkpoint "$CHECKPOINT" --batch-size "$BATCH_SIZE" \
    --solve-batch "$SOLVE_BATCH" --steps "$TOTAL_EPOCHS" --lr "$LEARNING_RATE" "${fused[@]}" $EXTRA_ARGS
