#!/usr/bin/env bash
# NeMo inference: extract features, estimate poses, print and save the accuracy table.
#   ./InferenceNeMo.sh                 unoccluded val set (L0)
#   ./InferenceNeMo.sh FGL1_BGL1       an Occluded-PASCAL3D+ level (also FGL2_BGL2, FGL3_BGL3)
#   CHECKPOINT=authors ./InferenceNeMo.sh     the authors' released models (downloaded once into
#                                              $EXPROOT/NeMo_<mesh_d>/), with their reported numbers
# Every variable below can also be set from the environment, e.g. GPUS=0,1 ./InferenceNeMo.sh
set -euo pipefail

DATAROOT="${DATAROOT:-./data}"
EXPROOT="${EXPROOT:-./exp}"
GPUS="${GPUS:-}"                              # empty: CPU; "0": one GPU; "0,1,2,3": torchrun over 4 GPUs
MESH_DIMENSIONS="${MESH_DIMENSIONS:-single}"  # single or multi
CATEGORIES="${CATEGORIES:-all}"               # e.g. "car bus", or all (every category with a checkpoint)
CHECKPOINT="${CHECKPOINT:-last}"              # last, an epoch (799), authors, or a checkpoint file
BATCH_SIZE="${BATCH_SIZE:-8}"                 # feature-extraction batch
SOLVE_BATCH="${SOLVE_BATCH:-auto}"            # images optimised together (auto: 64 on CPU, 4096 on a GPU)
TOTAL_EPOCHS="${TOTAL_EPOCHS:-300}"           # Adam steps of the pose solver
LEARNING_RATE="${LEARNING_RATE:-0.05}"        # Adam learning rate of the pose solver
FUSED="${FUSED:-no}"                          # yes: no feature file, solve straight from the network
SOLVER_BACKEND="${SOLVER_BACKEND:-auto}"      # auto (Triton kernels on a GPU, PyTorch on the CPU), torch or triton
SOLVER_GRAPHS="${SOLVER_GRAPHS:-auto}"        # auto (on a GPU with Triton: each solver step replays a CUDA graph) or off
DOWNLOAD="${DOWNLOAD:-auto}"                  # CHECKPOINT=authors: auto downloads them | no: never
DOWNLOAD_MIRROR="${DOWNLOAD_MIRROR:-}"        # base URL or folder holding NeMo_Single_799.zip / NeMo_Multi_799.zip
KEEP_ARCHIVES="${KEEP_ARCHIVES:-no}"          # keep the downloaded archive after unpacking
EXTRA_ARGS="${EXTRA_ARGS:-}"                  # more flags for python -m nemopose.inference (see --help)
OCC_LEVEL="${1:-${OCC_LEVEL:-}}"

source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/code/env.sh"

fused=$(nemopose_yes_no FUSED "$FUSED")
keep_archives=$(nemopose_yes_no KEEP_ARCHIVES "$KEEP_ARCHIVES")
case "$DOWNLOAD" in auto|no) ;; *) echo "error: DOWNLOAD must be auto or no, got '$DOWNLOAD'" >&2; exit 2 ;; esac
case "$SOLVER_BACKEND" in auto|torch|triton) ;; *)
    echo "error: SOLVER_BACKEND must be auto, torch or triton, got '$SOLVER_BACKEND'" >&2; exit 2 ;; esac
case "$SOLVER_GRAPHS" in auto|off) ;; *) echo "error: SOLVER_GRAPHS must be auto or off, got '$SOLVER_GRAPHS'" >&2; exit 2 ;; esac
flags=()
[[ "$fused" == yes ]] && flags+=(--fused)
[[ "$keep_archives" == yes ]] && flags+=(--keep-archives)
[[ "$SOLVE_BATCH" != auto ]] && flags+=(--solve-batch "$SOLVE_BATCH")
[[ "$SOLVER_BACKEND" != auto ]] && flags+=(--solver-backend "$SOLVER_BACKEND")
[[ "$SOLVER_GRAPHS" != auto ]] && flags+=(--cuda-graphs "$SOLVER_GRAPHS")
[[ -n "$DOWNLOAD_MIRROR" ]] && flags+=(--download-mirror "$DOWNLOAD_MIRROR")
read -r -a extra <<< "$EXTRA_ARGS"
# shellcheck disable=SC2086
nemopose_launch nemopose.inference \
    --dataroot "$DATAROOT" --exproot "$EXPROOT" --mesh-d "$MESH_DIMENSIONS" --categories $CATEGORIES \
    --occ-level "$OCC_LEVEL" --checkpoint "$CHECKPOINT" --batch-size "$BATCH_SIZE" \
    --steps "$TOTAL_EPOCHS" --lr "$LEARNING_RATE" --download "$DOWNLOAD" "${flags[@]}" "${extra[@]}"
