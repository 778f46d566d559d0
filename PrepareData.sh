#!/usr/bin/env bash
# PrepareData.sh: build NeMo's datasets (code/METHOD.md §6): crops and annotations for train, val and the
# occluded val sets, the cuboid meshes, and the 3D annotations. All logic lives in
# `python -m nemopose.data.prepare` (run it with --help for every option).
#
# Data source (SYNTHETIC):
#   auto  the real PASCAL3D+ when $DATAROOT/PASCAL3D+_release1.1 holds it; otherwise the
#         SYNTHETIC PASCAL3D+ (marked as such everywhere; its results are not PASCAL3D+ results)
#   no    the real data: downloads whatever is missing (PASCAL3D+_release1.1.zip, several GB, from
#         Stanford CVGL, Image_subsets.zip and OccludedPASCAL3D_FGL{1,2,3}_BGL{1,2,3}.zip from the
#         authors' Google Drive), resumably, then unpacks them safely into $DATAROOT
#   yes   the synthetic data
# Idempotent: a rerun skips finished work (and continues an interrupted download); OVERWRITE=yes
# redoes it. Every variable below can be set from the environment, e.g.
#   SYNTHETIC=no ./PrepareData.sh                                   # download and prepare PASCAL3D+
#   SYNTHETIC=no DOWNLOAD_MIRROR=http://host/nemo ./PrepareData.sh  # archives from a local mirror
#   CATEGORIES="car bus" SYNTHETIC=yes SYNTHETIC_SIZE=tiny ./PrepareData.sh
set -euo pipefail

DATAROOT="${DATAROOT:-./data}"                      # where the datasets live
CATEGORIES="${CATEGORIES:-all}"                     # "all" or e.g. "car bus"
MESH_DIMENSIONS="${MESH_DIMENSIONS:-single multi}"  # cuboid meshes to build and annotate
ENABLE_OCCLUDED="${ENABLE_OCCLUDED:-yes}"           # yes | no: the occluded val sets
SYNTHETIC="${SYNTHETIC:-auto}"                      # auto | no (real data, downloaded) | yes
DOWNLOAD="${DOWNLOAD:-auto}"                        # auto: fetch missing archives | no: list them and stop
DOWNLOAD_MIRROR="${DOWNLOAD_MIRROR:-}"              # base URL or folder with the archives (default: authors')
KEEP_ARCHIVES="${KEEP_ARCHIVES:-no}"                # yes | no: keep the archives after unpacking
SYNTHETIC_SIZE="${SYNTHETIC_SIZE:-demo}"            # tiny | demo
IMAGE_SCALE="${IMAGE_SCALE:-auto}"                  # auto = 1 for real data, 0.5 for synthetic
OVERWRITE="${OVERWRITE:-no}"                        # yes | no: redo finished work
SEED="${SEED:-0}"                                   # seed of the synthetic dataset
KP_WEIGHTS="${KP_WEIGHTS:-original}"                # original (as NeMo) | normal: 3D kp_weights

source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/code/env.sh"

occluded=$(nemopose_yes_no ENABLE_OCCLUDED "$ENABLE_OCCLUDED")
overwrite=$(nemopose_yes_no OVERWRITE "$OVERWRITE")
keep_archives=$(nemopose_yes_no KEEP_ARCHIVES "$KEEP_ARCHIVES")
flags=()
[[ "$occluded" == no ]] && flags+=(--no-occluded)
[[ "$overwrite" == yes ]] && flags+=(--overwrite)
[[ "$keep_archives" == yes ]] && flags+=(--keep-archives)
[[ -n "$DOWNLOAD_MIRROR" ]] && flags+=(--download-mirror "$DOWNLOAD_MIRROR")
case "${SYNTHETIC,,}" in
    auto|yes|no) synthetic="${SYNTHETIC,,}" ;;
    true) synthetic=yes ;;
    false) synthetic=no ;;
    *) echo "error: SYNTHETIC must be auto, yes or no, got '$SYNTHETIC'" >&2; exit 2 ;;
esac
case "$DOWNLOAD" in
    auto|no) ;;
    *) echo "error: DOWNLOAD must be auto or no, got '$DOWNLOAD'" >&2; exit 2 ;;
esac

# shellcheck disable=SC2086
exec "$PY" -m nemopose.data.prepare \
    --dataroot "$DATAROOT" \
    --categories $CATEGORIES \
    --mesh-dimensions "$MESH_DIMENSIONS" \
    --synthetic "$synthetic" \
    --download "$DOWNLOAD" \
    --synthetic-size "$SYNTHETIC_SIZE" \
    --image-scale "$IMAGE_SCALE" \
    --seed "$SEED" \
    --kp-weights "$KP_WEIGHTS" \
    "${flags[@]}"
