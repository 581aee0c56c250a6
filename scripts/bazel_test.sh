#!/usr/bin/env bash
# Runs every tests/**/test_*.py as a Bazel py_test (Debian bazel-bootstrap 4.2.3,
# fully offline; options live in .bazelrc, repositories in WORKSPACE).
#   bash scripts/bazel_test.sh [bazel test options] [targets; default //...]
# Bazel's Python is .venv/bin/python3 (or $PYTHON_BIN_PATH); see
# tools/python/python_configure.bzl.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
targets=()
for arg in "$@"; do [[ $arg == -* ]] || targets+=("$arg"); done
[[ ${#targets[@]} -gt 0 ]] || set -- "$@" //...
exec bazel test "$@"
