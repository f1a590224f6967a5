#!/usr/bin/env bash
# Create (or update) the development environment in .venv: torch pinned to the CPU build that
# lies on disk, then all three nnint distributions and the example plugin, editable.
# Idempotent: a second run only checks. Usage: bash scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
stamp=.venv/.nnint-setup
want=$(cat pyproject.toml packages/*/pyproject.toml examples/*/pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
# The two environments take about 3.5 GB (.venv 1.5 GB, .venv-official 1.9 GB); say so plainly
# instead of failing halfway through pip with OSError 28 (CI, session 18: a disk left at 1.3 GB).
free_kb=$(df -Pk . | awk 'NR == 2 {print $4}')
if [ "${free_kb:-0}" -lt 3700000 ]; then
  echo "[setup] only $((free_kb / 1024)) MB free on $(df -P . | awk 'NR == 2 {print $6}'); the environments need about 3.5 GB. Free some space (old clones, caches) and rerun." >&2
  exit 1
fi
# No pip cache: a CI machine once ran out of disk while pip wrote its download cache beside the
# install (OSError 28 during the SimpleITK download); the cache doubles what the install writes.
export PIP_NO_CACHE_DIR=1
# torch first and pinned, so nothing else can pull a multi-GB CUDA build.
echo "torch==2.13.0" > .venv/constraints.txt
.venv/bin/pip install --quiet --disable-pip-version-check -c .venv/constraints.txt torch==2.13.0
echo "[setup] installing nnint-core, nnint-bridge, nnint-adapters and the example plugin (editable)"
.venv/bin/pip install --quiet --disable-pip-version-check -c .venv/constraints.txt \
  -e packages/nnint-core -e packages/nnint-bridge -e packages/nnint-adapters \
  -e examples/nnint-example-backend "pytest>=8" "hypothesis>=6.100" "ruff>=0.5"
echo "$want" > "$stamp"
echo "[setup] done: $(.venv/bin/python -c 'import torch, nnint; print("torch", torch.__version__, "nnint", nnint.__version__)')"
