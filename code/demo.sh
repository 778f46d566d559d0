#!/usr/bin/env bash
# The end-to-end CPU demo on the embedded SYNTHETIC PASCAL3D+ (never a PASCAL3D+ result):
# set up the environment, generate and prepare the synthetic data, train a light NeMo per
# category, estimate poses on the unoccluded and the three occluded val sets, print the tables.
#
# Variables (environment): DEMO_CATEGORIES, DATAROOT (default ./data/synthetic_demo),
# EXPROOT (default ./exp/synthetic_demo), GPUS (default empty = CPU).
# Re-running continues where it stopped (prepared data, checkpoints and results are reused);
# delete the two folders to start over.
set -euo pipefail
REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_DIR"
export DATAROOT="${DATAROOT:-./data/synthetic_demo}"
export EXPROOT="${EXPROOT:-./exp/synthetic_demo}"
export CATEGORIES="${DEMO_CATEGORIES:-car aeroplane bus}"
export MESH_DIMENSIONS=single
export GPUS="${GPUS:-}"
start=$(date +%s)
stage() { printf '\n==== [%4ds] %s\n' "$(( $(date +%s) - start ))" "$*"; }

stage "set-up (first run creates .venv; torch is large)"
bash code/setup_env.sh

stage "synthetic PASCAL3D+ (demo size) and NeMo preparation -> $DATAROOT"
SYNTHETIC=yes SYNTHETIC_SIZE=demo ENABLE_OCCLUDED=yes ./PrepareData.sh

stage "training (demo preset: light backbone from scratch) -> $EXPROOT"
PRESET=demo ./TrainNeMo.sh

for level in "" FGL1_BGL1 FGL2_BGL2 FGL3_BGL3; do
    stage "inference ${level:-L0}"
    FUSED=yes ./InferenceNeMo.sh "$level"
done

stage "summary"
source code/env.sh
"$PY" -m nemopose.evaluate --exproot "$EXPROOT" --mesh-d single
printf '\nDemo finished in %d s. Outputs: %s/Accuracy_single/ (tables, per-image CSV), %s/NeMo_single/ (checkpoints).\n' \
    "$(( $(date +%s) - start ))" "$EXPROOT" "$EXPROOT"
