#!/usr/bin/env bash
# The end-to-end CPU demo on the embedded SYNTHETIC PASCAL3D+ (never a PASCAL3D+ result):
# set up the environment, generate and prepare the synthetic data, train a light NeMo per
# category, estimate poses on the unoccluded and the three occluded val sets, print the tables.
#
# Variables (environment): DEMO_CATEGORIES, DEMO_SEED (default 0: seeds both the synthetic
# data and the training; another seed gets its own folders, ./data/synthetic_demo_seed<N> and
# ./exp/synthetic_demo_seed<N>, so runs of several seeds can be compared), DATAROOT (default
# ./data/synthetic_demo), EXPROOT (default ./exp/synthetic_demo), GPUS (default empty = CPU).
# Re-running continues where it stopped (prepared data, checkpoints and results are reused);
# delete the two folders to start over.
set -euo pipefail
REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_DIR"
DEMO_SEED="${DEMO_SEED:-0}"
[[ "$DEMO_SEED" =~ ^[0-9]+$ ]] || { echo "error: DEMO_SEED must be a whole number, got '$DEMO_SEED'" >&2; exit 2; }
suffix=$([[ "$DEMO_SEED" == 0 ]] || echo "_seed$DEMO_SEED")
export DATAROOT="${DATAROOT:-./data/synthetic_demo$suffix}"
export EXPROOT="${EXPROOT:-./exp/synthetic_demo$suffix}"
export CATEGORIES="${DEMO_CATEGORIES:-car aeroplane bus}"
export MESH_DIMENSIONS=single
export GPUS="${GPUS:-}"
start=$(date +%s)
stage() { printf '\n==== [%4ds] %s\n' "$(( $(date +%s) - start ))" "$*"; }

stage "set-up (first run creates .venv; torch is large)"
[[ -n "${NEMOPOSE_PYTHON:-}" ]] || bash code/setup_env.sh     # NEMOPOSE_PYTHON: that environment, as it is

stage "synthetic PASCAL3D+ (demo size) and NeMo preparation -> $DATAROOT"
SEED="$DEMO_SEED" SYNTHETIC=yes SYNTHETIC_SIZE=demo ENABLE_OCCLUDED=yes ./PrepareData.sh

stage "training (demo preset: light backbone from scratch) -> $EXPROOT"
SEED="$DEMO_SEED" PRESET=demo ./TrainNeMo.sh

for level in "" FGL1_BGL1 FGL2_BGL2 FGL3_BGL3; do
    stage "inference ${level:-L0}"
    FUSED=yes ./InferenceNeMo.sh "$level"
done

stage "summary (the tables of each level are printed above, and in summary.txt)"
source code/env.sh
"$PY" -m nemopose.evaluate --exproot "$EXPROOT" --mesh-d single --summary-only

example=""
if [[ " $CATEGORIES " == *" car "* ]]; then
    stage "your own photos: the predictor on a synthetic photo with its box (its first use calibrates the no-object answer)"
    shown_python=$([[ "$PY" == "$REPO_DIR/.venv/bin/python" ]] && echo .venv/bin/python || echo "$PY")
    example=$("$PY" -m nemopose.predict --category car --exproot "$EXPROOT" --dataroot "$DATAROOT" \
              --print-example --python "$shown_python")
    eval "$(head -n 1 <<< "$example")"
fi
printf '\nDemo (DEMO_SEED=%s) finished in %d s. Outputs: %s/Accuracy_single/ (tables, per-image CSV), %s/NeMo_single/ (checkpoints).\n' \
    "$DEMO_SEED" "$(( $(date +%s) - start ))" "$EXPROOT" "$EXPROOT"
if [[ -n "$example" ]]; then
    printf '\nYour own photos (README "Your own images"): the line the demo just ran (its picture and CSV are in %s/photos/),\n\n%s\n' \
        "$EXPROOT" "$example"
fi
