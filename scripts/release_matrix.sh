#!/usr/bin/env bash
# The release matrix on a GPU machine, for the releases that cannot import on
# a CPU-only torch (0.6.14-0.7.0: a module-level CUDA query in FlashInfer) and
# for the floor. Needs a CUDA torch already installed in the base .venv (with
# the plugin: pip install -e ".[test]") and flashinfer-python wheels in .whl/
# (pip download --no-deps -d .whl flashinfer-python==VERSION), since the GPU
# machine may have no package index.
# Usage: scripts/release_matrix.sh [VERSION ...]   (default: 0.7.0 0.6.13)
# Prints one line per release: enable (hook), check, release tests.
set -uo pipefail
cd "$(dirname "$0")/.."
versions=("$@")
[ ${#versions[@]} -gt 0 ] || versions=(0.7.0 0.6.13)
for v in "${versions[@]}"; do
  if ! .ci/release_venv "$v" .whl >/dev/null 2>&1; then
    echo "| $v | no environment (wheel missing from .whl?) | | |"; continue
  fi
  py=".venvs/fi-$v/bin/python"
  hook=$(FLASHINFER_TRACE_APPLY=1 FLASHINFER_TRACE_APPLY_PATH="$PWD" "$py" -c \
    "import flashinfer, flashinfer_trace_apply as f; print('enabled' if f.is_enabled() else 'off')" 2>&1 | tail -1)
  check=$("$py" -m flashinfer_trace_apply check -q 2>&1 | tail -1)
  tests=$("$py" -m pytest -q -m "release or gpu" -p no:cacheprovider --ignore=tests/test_release_lines.py 2>&1 | tail -1)
  echo "| $v | hook: $hook | check: $check | tests: $tests |"
done
