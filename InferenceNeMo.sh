#!/usr/bin/env bash
# NeMo inference: extract features, estimate poses, print and save the accuracy table.
#   ./InferenceNeMo.sh                 unoccluded val set (L0)
#   ./InferenceNeMo.sh FGL1_BGL1       an Occluded-PASCAL3D+ level (also FGL2_BGL2, FGL3_BGL3)
#   CHECKPOINT=authors ./InferenceNeMo.sh     the authors' released models (downloaded once into
#                                              $EXPROOT/NeMo_<mesh_d>/), with their reported numbers
# Every variable below can also be set from the environment, e.g. GPUS=0,1 ./InferenceNeMo.sh
set -euo pipefail

# Empty variables take the defaults of `python -m nemopose.inference --help` (the paper's settings).
DATAROOT="${DATAROOT:-./data}"
EXPROOT="${EXPROOT:-./exp}"
GPUS="${GPUS:-}"                              # empty: CPU; "0": one GPU; "0,1,2,3": torchrun over 4 GPUs
MESH_DIMENSIONS="${MESH_DIMENSIONS:-single}"  # single or multi
CATEGORIES="${CATEGORIES:-all}"               # e.g. "car bus", or all (every category with a checkpoint)
CHECKPOINT="${CHECKPOINT:-}"                  # last (empty), an epoch (799), authors, or a checkpoint file
BATCH_SIZE="${BATCH_SIZE:-}"                  # feature-extraction batch (empty: 8)
SOLVE_BATCH="${SOLVE_BATCH:-}"                # images optimised together (empty: 64 on CPU, 4096 on a GPU)
TOTAL_EPOCHS="${TOTAL_EPOCHS:-}"              # Adam steps of the pose solver (empty: 300)
LEARNING_RATE="${LEARNING_RATE:-}"            # Adam learning rate of the pose solver (empty: 0.05)
FUSED="${FUSED:-}"                            # yes: no feature file, solve straight from the network (empty: no)
SOLVER_BACKEND="${SOLVER_BACKEND:-}"          # auto (empty: Triton kernels on a GPU, PyTorch on the CPU), torch, triton
SOLVER_GRAPHS="${SOLVER_GRAPHS:-}"            # auto (empty: on a GPU with Triton, each solver step replays a CUDA graph) or off
DOWNLOAD="${DOWNLOAD:-}"                      # CHECKPOINT=authors: auto (empty) downloads them | no: never
DOWNLOAD_MIRROR="${DOWNLOAD_MIRROR:-}"        # base URL or folder holding NeMo_Single_799.zip / NeMo_Multi_799.zip
KEEP_ARCHIVES="${KEEP_ARCHIVES:-}"            # yes: keep the downloaded archive after unpacking (empty: no)
EXTRA_ARGS="${EXTRA_ARGS:-}"                  # more flags for python -m nemopose.inference (see --help)
OCC_LEVEL="${1:-${OCC_LEVEL:-}}"

source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/code/env.sh"

args=(--dataroot "$DATAROOT" --exproot "$EXPROOT" --mesh-d "$MESH_DIMENSIONS" --occ-level "$OCC_LEVEL")
read -r -a categories <<< "$CATEGORIES"
args+=(--categories "${categories[@]}")
nemopose_opt --checkpoint "$CHECKPOINT"
nemopose_opt --batch-size "$BATCH_SIZE"
[[ "$SOLVE_BATCH" == auto ]] || nemopose_opt --solve-batch "$SOLVE_BATCH"
nemopose_opt --steps "$TOTAL_EPOCHS"
nemopose_opt --lr "$LEARNING_RATE"
nemopose_opt --fused "$FUSED"
nemopose_opt --solver-backend "$SOLVER_BACKEND"
nemopose_opt --cuda-graphs "$SOLVER_GRAPHS"
nemopose_opt --download "$DOWNLOAD"
nemopose_opt --download-mirror "$DOWNLOAD_MIRROR"
nemopose_opt --keep-archives "$KEEP_ARCHIVES"
read -r -a extra <<< "$EXTRA_ARGS"
nemopose_launch nemopose.inference "${args[@]}" "${extra[@]}"
