#!/usr/bin/env bash
# Run one benchmark script in the project environment: bash benchmarks/run.sh bench_render.py [args]
set -euo pipefail
source "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/code/env.sh"
script="$1"; shift
exec "$PY" "$REPO/benchmarks/$script" "$@"
