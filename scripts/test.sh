#!/usr/bin/env bash
# The whole test suite: sets itself up, then pytest starts the real parts it needs
# (Redis, an S3 endpoint, the local model, gunicorn and RQ workers) on private ports.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
    # pytest's "no tests collected": fine for a filtered run, a broken suite otherwise
    if [ "$#" -gt 0 ]; then echo "no tests matched: $*"; exit 0; fi
    echo "error: pytest collected no tests"; exit 1
fi
exit "$rc"
