#!/usr/bin/env bash
# Every flagfile under flags/ builds its exact network, trains one step and
# evaluates on CPU through `python -m pyramidnet_tf.train` (tests/flagfile_check.py;
# CI runs one flagfile of each kind, tests/cli/test_flagfile_networks.py).
#   bash scripts/check_flagfiles.sh [--jobs=N] [flagfiles...]   (default: all)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh >/dev/null
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
files=()
options=()
for arg in "$@"; do
  if [[ $arg == -* ]]; then options+=("$arg"); else files+=("$arg"); fi
done
if [[ ${#files[@]} -eq 0 ]]; then
  exec .venv/bin/python -m tests.flagfile_check --all "${options[@]}"
fi
exec .venv/bin/python -m tests.flagfile_check "${options[@]}" "${files[@]}"
