#!/usr/bin/env bash
# The project's test command (README and CI): set up .venv, lint the tree
# (ruff.toml), run every test.
#   bash scripts/test.sh [extra pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
echo "== ruff check (ruff.toml)"
.venv/bin/ruff check .
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
set +e
.venv/bin/python -m pytest -q -p no:cacheprovider tests "$@"
status=$?
set -e
if [[ $status -eq 5 ]]; then
  echo "ERROR: pytest collected no tests" >&2
  exit 1
fi
exit $status
