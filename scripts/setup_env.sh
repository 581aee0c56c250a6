#!/usr/bin/env bash
# Creates (or refreshes) the project's virtualenv in .venv and installs the
# package with its CPU TensorFlow and test extras. Idempotent; offline-safe
# where pip's configured indexes/wheel stores are reachable.
#   PYTHON=python3.11 bash scripts/setup_env.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
EXTRAS="${EXTRAS:-cpu,test}"
if [[ ! -x .venv/bin/python ]]; then
  "$PYTHON" -m venv .venv
fi
# Re-install only when setup.py changed since the last successful install.
stamp=".venv/.pyramidnet_installed"
want="$(sha256sum setup.py | cut -d' ' -f1) $EXTRAS"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e ".[$EXTRAS]"
  echo "$want" > "$stamp"
fi
.venv/bin/python -c "import pyramidnet_tf, tensorflow as tf; print('TensorFlow', tf.__version__)"
