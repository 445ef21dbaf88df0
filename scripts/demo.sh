#!/usr/bin/env bash
# The main job end to end on a fresh machine: sets everything up, starts every part, submits the
# bundled seed set over HTTP, shows progress, downloads the dataset and prints a summary.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python scripts/demo.py "$@"
