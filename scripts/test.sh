#!/usr/bin/env bash
# The whole test suite: sets itself up, then pytest starts the real parts it needs
# (Redis, an S3 endpoint, the local model, gunicorn and RQ workers) on private ports.
#   scripts/test.sh [--fast] [pytest arguments]
# --fast leaves out the tests marked model, image, browser and slow (docs/development.md) and runs the
# rest on three pytest-xdist workers (they mostly wait on subprocesses): the loop to run while working.
# CI runs everything, one test at a time.
set -euo pipefail
cd "$(dirname "$0")/.."
fast=()
if [ "${1:-}" = "--fast" ]; then
    shift
    fast=(-m "not model and not image and not browser and not slow" -n 3)
fi
bash scripts/setup.sh
set +e
.venv/bin/python -m pytest "${fast[@]}" "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
    # pytest's "no tests collected": fine for a filtered run, a broken suite otherwise
    if [ "$#" -gt 0 ] || [ "${#fast[@]}" -gt 0 ]; then echo "no tests matched: ${fast[*]} $*"; exit 0; fi
    echo "error: pytest collected no tests"; exit 1
fi
exit "$rc"
