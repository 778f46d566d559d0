#!/usr/bin/env bash
# Create the project's virtual environment (.venv at the repository root) and install the
# requirements. Idempotent: a second run only checks that the requirements are unchanged.
#
# Variables: PYTHON (interpreter to build the venv from, default python3),
#            VENV (default <repo>/.venv),
#            TORCH_INDEX_URL (extra index for torch wheels, e.g. the CPU-only index).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-$REPO/.venv}"

if ! "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' 2>/dev/null; then
    echo "error: NeMo needs Python >= 3.10; '$PYTHON' is $("$PYTHON" --version 2>&1 || echo missing)" >&2
    exit 1
fi

# code/ on the venv's path (a .pth file), so that `.venv/bin/python -m nemopose.<tool>` and
# `import nemopose` work from any folder without PYTHONPATH
link_code() {
    "$VENV/bin/python" - "$REPO/code" <<'PY'
import pathlib, site, sys
pth = pathlib.Path(site.getsitepackages()[0]) / "nemopose-code.pth"
if not pth.is_file() or pth.read_text().strip() != sys.argv[1]:
    pth.write_text(sys.argv[1] + "\n")
PY
}

stamp="$VENV/.nemopose-requirements"
want="$(cat "$REPO/requirements.txt" "$REPO/tests/requirements.txt" | sha256sum | cut -d' ' -f1)"
if [[ -x "$VENV/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    link_code
    exit 0
fi

echo "[setup] creating the virtual environment in $VENV (first run only; torch is large)"
"$PYTHON" -m venv "$VENV"
extra=()
if [[ -n "${TORCH_INDEX_URL:-}" ]]; then
    extra=(--extra-index-url "$TORCH_INDEX_URL")
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${extra[@]}" \
    -r "$REPO/requirements.txt" -r "$REPO/tests/requirements.txt"
"$VENV/bin/python" -c 'import torch, torchvision, numpy, scipy, PIL, tqdm; print("[setup] torch", torch.__version__, "ready")'
link_code
echo "$want" > "$stamp"
