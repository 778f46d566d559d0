#!/usr/bin/env bash
# Set up the environment (first run only) and run the test suite. Extra arguments go to pytest.
set -euo pipefail
source "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/code/env.sh"
cd "$REPO"
exec "$PY" -m pytest "$@"   # testpaths (pytest.ini) = tests/
