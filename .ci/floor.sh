#!/usr/bin/env bash
# Oldest-versions check: build a virtual environment holding exactly the lowest versions that
# requirements.txt and tests/requirements.txt declare (every "name>=X" installed as "name==X",
# binary wheels only) and run the test suite in it. Run it after changing a floor; the README's
# requirements note records the last result.
#
#   bash .ci/floor.sh [pytest args...]
#
# Variables: PYTHON (interpreter for the venv, default python3), FLOOR_VENV (default
# /tmp/nemopose-floor-venv; reused when its pins are unchanged). Not part of .ci/run: the
# CUDA torch wheels that PyPI serves for Linux pull in about 3 GB of NVIDIA libraries.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
VENV="${FLOOR_VENV:-/tmp/nemopose-floor-venv}"

# "name>=X" -> "name==X"; comments and blank lines dropped; a requirement without a floor fails.
pins="$(cat "$REPO/requirements.txt" "$REPO/tests/requirements.txt" | sed -e 's/#.*//' -e 's/[[:space:]]//g' \
        | awk 'NF { if ($0 !~ />=/) { print "error: no floor in requirement " $0 > "/dev/stderr"; exit 1 }
                     sub(/>=/, "=="); sub(/,.*/, ""); print }')"
echo "[floor] pins: $(echo $pins)"

stamp="$VENV/.floor-pins"
if [[ ! -x "$VENV/bin/python" || ! -f "$stamp" || "$(cat "$stamp")" != "$pins" ]]; then
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
    # shellcheck disable=SC2086
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --only-binary=:all: $pins
    echo "$pins" > "$stamp"
fi
"$VENV/bin/python" -c 'import torch, torchvision, numpy, triton
print("[floor] torch", torch.__version__, "torchvision", torchvision.__version__, "numpy", numpy.__version__,
      "triton", triton.__version__)'
cd "$REPO"
PYTHONPATH="$REPO/code" exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@"
