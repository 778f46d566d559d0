#!/usr/bin/env bash
# PrepareData.sh: not implemented yet (see the open issues). It exits non-zero rather than pretend.
set -euo pipefail
echo "PrepareData.sh: not implemented yet" >&2
exit 2
