#!/usr/bin/env bash
# The project's test command (README and CI): set up .venv, lint the tree
# (ruff.toml), run every test, two test files at a time (pytest-xdist,
# --dist loadfile: a file's tests and module fixtures stay in one process;
# the longest files first, see tests/conftest.py).
# Most of a test's time is single-threaded (tracing, subprocess start-up),
# so two at once on 2 cores take about 70 % of the serial time. The 30
# slowest tests are listed at the end (--durations=30).
#   bash scripts/test.sh [extra pytest args]
#   PYTEST_WORKERS=0 bash scripts/test.sh     # serial, in this process
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
echo "== ruff check (ruff.toml)"
.venv/bin/ruff check .
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
set +e
workers="${PYTEST_WORKERS:-2}"
parallel=()
[[ "$workers" != 0 ]] && parallel=(-n "$workers" --dist loadfile --no-loadscope-reorder)
.venv/bin/python -m pytest -q -p no:cacheprovider --durations=30 "${parallel[@]}" tests "$@"
status=$?
set -e
if [[ $status -eq 5 ]]; then
  echo "ERROR: pytest collected no tests" >&2
  exit 1
fi
exit $status
