#!/usr/bin/env bash
# Set up (virtual environment, dependencies) and run the test suite.
set -euo pipefail
cd "$(dirname "$0")"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -r requirements.txt
.venv/bin/python -m pytest -q tests "$@"
