#!/usr/bin/env bash
# The whole stack on fixed local ports for trying the API by hand: sets everything up, starts Redis,
# the S3 endpoint, the embedded model, gunicorn and a worker, prints the URL and an API key, and
# stops everything on Ctrl-C. Extra arguments go to `python -m jobs.tools.local_stack` (--help lists them).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m jobs.tools.local_stack "$@"
