#!/usr/bin/env bash
# The release matrix on a GPU machine, for the releases that cannot import on
# a CPU-only torch (0.6.14-0.7.0: a module-level CUDA query in FlashInfer) and
# for the floor: per release, the start-up hook, `check` on the bundled folder
# (on the GPU: FlashInfer's kernels compiled by that release) and the
# release-sensitive tests.
#
# Two set-ups:
# - here, with the base .venv (CUDA torch, the plugin installed editable) and
#   flashinfer-python wheels in .whl/: each release gets .venvs/fi-VERSION
#   layered over .venv (.ci/release_venv);
# - on the device machine (no .venv, no package index): the machine's Python
#   has torch; WHEELS=DIR names a folder holding the plugin's wheel, apache-tvm-ffi
#   and one flashinfer-python wheel per release, and each release gets a venv
#   over the system site-packages.
# Usage: [WHEELS=DIR] scripts/release_matrix.sh [VERSION ...]   (default: 0.7.0 0.6.13)
# Prints one markdown row per release: enable (hook), check, release tests.
set -uo pipefail
cd "$(dirname "$0")/.."
versions=("$@")
[ ${#versions[@]} -gt 0 ] || versions=(0.7.0 0.6.13)
row() {  # version python [code run first, as start-up would]
  local v=$1 py=$2 first=${3:-} hook check tests
  hook=$(FLASHINFER_TRACE_APPLY=1 FLASHINFER_TRACE_APPLY_PATH="$PWD" "$py" -c \
    "${first}import flashinfer, flashinfer_trace_apply as f; print('flashinfer', flashinfer.__version__, 'enabled' if f.is_enabled() else 'off')" 2>&1 | tail -1)
  check=$("$py" -m flashinfer_trace_apply check -q --batch 1 --batch 127 --no-timing 2>&1 | tail -1)
  tests=$("$py" -m pytest -q -m release -p no:cacheprovider --ignore=tests/test_release_lines.py 2>&1 | tail -1)
  echo "| $v | hook: $hook | check: $check | tests: $tests |"
}
for v in "${versions[@]}"; do
  if [ -n "${WHEELS:-}" ]; then
    # A folder per release on PYTHONPATH (the machine's Python may itself be a
    # venv, whose packages a nested venv would not see); the hook's .pth is
    # read through site.addsitedir, as site-packages would at start-up.
    dir="/tmp/fi-$v"
    rm -rf "$dir" && python3 -m pip install -q --no-index --no-deps --no-compile --target "$dir" \
      "$WHEELS"/flashinfer_python-"$v"-*.whl "$WHEELS"/flashinfer_trace_apply-*.whl "$WHEELS"/apache_tvm_ffi-*.whl \
      || { echo "| $v | install failed (wheel missing from $WHEELS?) | | |"; continue; }
    ( export PYTHONPATH="$dir"; row "$v" python3 "import site; site.addsitedir('$dir'); " ) &
  else
    if ! .ci/release_venv "$v" .whl >/dev/null 2>&1; then
      echo "| $v | no environment (wheel missing from .whl?) | | |"; continue
    fi
    row "$v" ".venvs/fi-$v/bin/python"
  fi
done
wait
