#!/usr/bin/env bash
# Run the whole test suite. Sets up .venv (nnint, editable) and .venv-official (the official
# nninteractive 2.6.0 package, for the compatibility tests) first when they are missing.
# Usage: bash scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ "${NNINT_SKIP_COMPAT:-0}" != "1" ]; then
  bash scripts/compat/setup_official.sh .venv-official
fi
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
exec .venv/bin/python -m pytest "$@"
