#!/usr/bin/env bash
# PrepareData.sh: build NeMo's datasets (SPEC 6): crops and annotations for train, val and the
# occluded val sets, the cuboid meshes, and the 3D annotations. All logic lives in
# `python -m nemopose.data.prepare` (run it with --help for every option).
#
# Without a real PASCAL3D+ at $DATAROOT/PASCAL3D+_release1.1 it builds the SYNTHETIC PASCAL3D+
# instead (marked as such everywhere; its results are not PASCAL3D+ results). Idempotent: a
# rerun skips finished work; OVERWRITE=yes redoes it. Every variable below can be set from the
# environment, e.g.  CATEGORIES="car bus" SYNTHETIC=yes SYNTHETIC_SIZE=tiny ./PrepareData.sh
set -euo pipefail

DATAROOT="${DATAROOT:-./data}"                      # where the datasets live
CATEGORIES="${CATEGORIES:-all}"                     # "all" or e.g. "car bus"
MESH_DIMENSIONS="${MESH_DIMENSIONS:-single multi}"  # cuboid meshes to build and annotate
ENABLE_OCCLUDED="${ENABLE_OCCLUDED:-yes}"           # yes | no: the occluded val sets
SYNTHETIC="${SYNTHETIC:-auto}"                      # auto (real PASCAL3D+ when present) | yes | no
SYNTHETIC_SIZE="${SYNTHETIC_SIZE:-demo}"            # tiny | demo
IMAGE_SCALE="${IMAGE_SCALE:-auto}"                  # auto = 1 for real data, 0.5 for synthetic
OVERWRITE="${OVERWRITE:-no}"                        # yes | no: redo finished work
SEED="${SEED:-0}"                                   # seed of the synthetic dataset
KP_WEIGHTS="${KP_WEIGHTS:-original}"                # original (as NeMo) | normal: 3D kp_weights

source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/code/env.sh"

yes_no() {  # yes_no NAME VALUE: fail loudly on anything but yes/no
    case "$2" in
        yes|no) ;;
        *) echo "PrepareData.sh: $1 must be yes or no, got '$2'" >&2; exit 2 ;;
    esac
}
yes_no ENABLE_OCCLUDED "$ENABLE_OCCLUDED"
yes_no OVERWRITE "$OVERWRITE"

flags=()
[[ "$ENABLE_OCCLUDED" == no ]] && flags+=(--no-occluded)
[[ "$OVERWRITE" == yes ]] && flags+=(--overwrite)

exec "$PY" -m nemopose.data.prepare \
    --dataroot "$DATAROOT" \
    --categories "$CATEGORIES" \
    --mesh-dimensions "$MESH_DIMENSIONS" \
    --synthetic "$SYNTHETIC" \
    --synthetic-size "$SYNTHETIC_SIZE" \
    --image-scale "$IMAGE_SCALE" \
    --seed "$SEED" \
    --kp-weights "$KP_WEIGHTS" \
    "${flags[@]}"
