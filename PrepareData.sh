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

# Empty variables take the defaults of `python -m nemopose.data.prepare --help`.
DATAROOT="${DATAROOT:-./data}"                      # where the datasets live
CATEGORIES="${CATEGORIES:-all}"                     # "all" or e.g. "car bus"
MESH_DIMENSIONS="${MESH_DIMENSIONS:-}"              # cuboid meshes to build and annotate (empty: "single multi")
ENABLE_OCCLUDED="${ENABLE_OCCLUDED:-}"              # yes (empty) | no: the occluded val sets
SYNTHETIC="${SYNTHETIC:-}"                          # auto (empty) | no (real data, downloaded) | yes
DOWNLOAD="${DOWNLOAD:-}"                            # auto (empty): fetch missing archives | no: list them and stop
DOWNLOAD_MIRROR="${DOWNLOAD_MIRROR:-}"              # base URL or folder with the archives (default: authors')
KEEP_ARCHIVES="${KEEP_ARCHIVES:-}"                  # yes | no (empty): keep the archives after unpacking
SYNTHETIC_SIZE="${SYNTHETIC_SIZE:-}"                # tiny | demo (empty)
IMAGE_SCALE="${IMAGE_SCALE:-}"                      # auto (empty) = 1 for real data, 0.5 for synthetic
OVERWRITE="${OVERWRITE:-}"                          # yes | no (empty): redo finished work
SEED="${SEED:-}"                                    # seed of the synthetic dataset (empty: 0)
KP_WEIGHTS="${KP_WEIGHTS:-}"                        # original (empty, as NeMo) | normal: 3D kp_weights

source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/code/env.sh"

read -r -a categories <<< "$CATEGORIES"
args=(--dataroot "$DATAROOT" --categories "${categories[@]}")
nemopose_opt --mesh-dimensions "$MESH_DIMENSIONS"
nemopose_opt --occluded "$ENABLE_OCCLUDED"
nemopose_opt --synthetic "$SYNTHETIC"
nemopose_opt --download "$DOWNLOAD"
nemopose_opt --download-mirror "$DOWNLOAD_MIRROR"
nemopose_opt --keep-archives "$KEEP_ARCHIVES"
nemopose_opt --synthetic-size "$SYNTHETIC_SIZE"
nemopose_opt --image-scale "$IMAGE_SCALE"
nemopose_opt --overwrite "$OVERWRITE"
nemopose_opt --seed "$SEED"
nemopose_opt --kp-weights "$KP_WEIGHTS"
exec "$PY" -m nemopose.data.prepare "${args[@]}"
