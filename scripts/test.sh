#!/usr/bin/env bash
# Install Lomas with its test dependencies into .venv and run the whole test suite.
# Extra arguments go to pytest (for example: bash scripts/test.sh -k ledger).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3.11 -m venv .venv 2>/dev/null || python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[test]'
exec .venv/bin/python -m pytest "$@"
