#!/usr/bin/env bash
# The main job on the embedded default: segment the bundled sample image with the bundled model
# and write a mask plus an overview PNG to out/demo/. No download. Usage: bash scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/nnint demo --out out/demo "$@"
