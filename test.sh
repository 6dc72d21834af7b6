#!/usr/bin/env bash
# Set up (virtual environment, dependencies) and run the test suite.
set -euo pipefail
cd "$(dirname "$0")"
source setup_env.sh
.venv/bin/python -m pytest -q -rs tests "$@"     # -rs: why each skipped test skipped
