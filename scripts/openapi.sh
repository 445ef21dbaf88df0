#!/usr/bin/env bash
# Regenerate openapi.yaml from the code (marshmallow schemas in api_spec/, views in service/).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/flask --app service.app openapi write --format yaml openapi.yaml
echo "wrote openapi.yaml"
