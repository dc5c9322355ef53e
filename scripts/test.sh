#!/usr/bin/env bash
# Run the test suite in ./.venv (or $VENV), after scripts/setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || { echo "test: no $VENV here; run 'bash scripts/setup.sh' first" >&2; exit 1; }
exec "$VENV"/bin/python -m pytest -q "$@"
