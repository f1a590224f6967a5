#!/usr/bin/env bash
# Run the whole test suite (sets up .venv first if needed). Usage: bash scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
