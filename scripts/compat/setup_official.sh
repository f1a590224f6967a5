#!/usr/bin/env bash
# Build the virtual environment with the official nnInteractive package that the compatibility
# harness (scripts/compat/compare.py) compares nnint against.
#
#   bash scripts/compat/setup_official.sh [PATH]        (default PATH: .venv-official in the repo root)
#
# Pinned: nninteractive==2.6.0, torch==2.13.0 (CPU build), torchvision==0.28.0. Idempotent: when
# PATH already holds a python that imports nnInteractive 2.6.0, it only says so and exits.
# Environment:
#   PYTHON                 interpreter for the venv (default python3.11, else python3)
#   NNINT_TORCH_INDEX_URL  extra package index for the CPU torch wheels, e.g.
#                          https://download.pytorch.org/whl/cpu (needed where PyPI's default torch
#                          wheel is the CUDA build)
set -euo pipefail
cd "$(dirname "$0")/../.."
# no pip download cache (as scripts/setup.sh): it doubles what the install writes
export PIP_NO_CACHE_DIR=1
VENV=${1:-.venv-official}
NNI_VERSION=2.6.0
TORCH_VERSION=2.13.0
TORCHVISION_VERSION=0.28.0

check() {
  "$VENV/bin/python" - "$NNI_VERSION" <<'EOF' 2>/dev/null
import sys
from importlib.metadata import version
from nnInteractive.inference.inference_session import nnInteractiveInferenceSession  # noqa: F401
import torch
assert version("nninteractive") == sys.argv[1], version("nninteractive")
print(f"nninteractive {version('nninteractive')}, torch {torch.__version__}")
EOF
}

if [ -x "$VENV/bin/python" ] && found=$(check); then
  echo "[setup_official] $VENV is ready ($found)"
  exit 0
fi

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup_official] creating $VENV with $($PY --version)"
  "$PY" -m venv "$VENV"
fi
index=()
if [ -n "${NNINT_TORCH_INDEX_URL:-}" ]; then
  index=(--extra-index-url "$NNINT_TORCH_INDEX_URL")
fi
constraints="$VENV/constraints.txt"
# torch first and pinned to the CPU build, so nninteractive cannot pull a multi-GB CUDA build.
echo "[setup_official] [1/2] installing torch==$TORCH_VERSION (CPU)"
"$VENV/bin/pip" install --disable-pip-version-check --progress-bar off ${index[@]+"${index[@]}"} "torch==$TORCH_VERSION"
installed=$("$VENV/bin/python" -c 'import torch; print(torch.__version__)')
printf 'torch==%s\ntorchvision==%s\n' "$installed" "$TORCHVISION_VERSION" > "$constraints"
echo "[setup_official] [2/2] installing nninteractive==$NNI_VERSION (constraints: $(tr '\n' ' ' < "$constraints"))"
"$VENV/bin/pip" install --disable-pip-version-check --progress-bar off ${index[@]+"${index[@]}"} -c "$constraints" \
  "nninteractive==$NNI_VERSION"
if ! found=$(check); then
  echo "[setup_official] ERROR: $VENV/bin/python cannot import nnInteractive $NNI_VERSION" >&2
  exit 1
fi
echo "[setup_official] done: $VENV ($found)"
