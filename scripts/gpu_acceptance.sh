#!/usr/bin/env bash
# Everything the issues ask to see on a GPU, in one call of the device tool
# (each call may land on a bare machine, and FlashInfer compiles each kernel
# family on first use: one long call costs less than many short ones, and the
# independent parts run side by side so their JIT builds overlap).
#
# Here, first:  bash ../shared/device/fetch-wheels.sh && python3 -m pip wheel -q --no-deps -w .whl .
#               (plus flashinfer-bench and its light dependencies for the export run)
# Then run, with carry [".whl"]:  bash scripts/gpu_acceptance.sh
# Results land in $OUT/gpu_acceptance.tgz (the device tool brings back at most
# 8 files): one log per part, the start-up table, check's JSON, FlashInfer-Bench's
# run on an exported folder; summary.txt beside it.
set -uo pipefail
FINAL=${OUT:-/tmp/gpu-acceptance}
OUT=$(mktemp -d)
LIMIT=${GPU_ACCEPTANCE_LIMIT:-470}
PARTS=${PARTS:-startup,routing,loaders,bundled,policies,engines,curate,check,fib}  # a subset reruns only those
# bench: kernel time of the families in BENCH_FAMILIES (bench_solutions.py --family), run last and alone
# on the GPU so the other parts do not share it; FlashInfer's JIT builds are cached by then.
want() { [[ ",$PARTS," == *",$1,"* ]]; }
mkdir -p "$FINAL"
trap 'tar czf "$FINAL/gpu_acceptance.tgz" -C "$OUT" --exclude=dataset/definitions --exclude=dataset/solutions . ; cp "$OUT/summary.txt" "$FINAL/" 2>/dev/null' EXIT
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
python3 -m pip install -q --no-index --no-deps --no-compile .whl/*.whl || exit 2
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch, triton, flashinfer; print('torch', torch.__version__, 'triton', triton.__version__, 'flashinfer', flashinfer.__version__)" | tee -a "$OUT/gpu.txt"

# 1. start-up first, while the machine is quiet: import flashinfer with and without the hook
want startup && timeout 120 python3 scripts/bench_startup.py --rounds 3 --markdown > "$OUT/startup.md" 2>&1

pytest_part() {  # name, files...
  local name=$1; shift
  timeout "$LIMIT" python3 -m pytest -q -m gpu -p no:cacheprovider -rfEs --durations=15 \
    --junitxml="$OUT/$name.xml" "$@" > "$OUT/$name.log" 2>&1
  echo "$name: rc=$? $(tail -n 1 "$OUT/$name.log")" | tee -a "$OUT/summary.txt"
}
# 2. the GPU tests, in independent groups side by side
want routing && pytest_part routing tests/test_gpu.py &
want loaders && pytest_part loaders tests/test_loaders.py &  # builds a torch extension: minutes
want bundled && pytest_part bundled tests/test_fast_launch.py tests/test_bundled_*_gpu.py &
want policies && pytest_part policies tests/test_gpu_policies.py &
want engines && pytest_part engines tests/test_engine_call_patterns_gpu.py &
want curate && pytest_part curate tests/test_trace_sets.py &
# 3. the main job on the GPU, whole bundle
want check && ( timeout "$LIMIT" flashinfer-trace-apply check --batch 1 --batch 127 --no-timing --save-json "$OUT/check.json" \
    > "$OUT/check.log" 2>&1; echo "check: rc=$? $(tail -n 2 "$OUT/check.log" | tr '\n' ' ')" | tee -a "$OUT/summary.txt" ) &
# 4. FlashInfer-Bench's own runner on an exported folder (a few definitions)
want fib && ( flashinfer-trace-apply export . -o "$OUT/dataset" > "$OUT/export.log" 2>&1 &&
  cd "$OUT" && timeout "$LIMIT" flashinfer-bench run --local "$OUT/dataset" ${FIB_DEFINITIONS:---definitions rmsnorm_h4096 fused_add_rmsnorm_h4096 silu_and_mul_h28672} \
    --warmup-runs 3 --iterations 20 --num-trials 1 --save-results > "$OUT/fib_run.log" 2>&1
  echo "fib run: rc=$? $(grep -c PASSED "$OUT/fib_run.log") PASSED lines; $(tail -n 3 "$OUT/fib_run.log" | tr '\n' ' ')" | tee -a "$OUT/summary.txt" ) &
wait
# 5. kernel time, alone on the GPU
want bench && ( timeout "$LIMIT" python3 scripts/bench_solutions.py --family "${BENCH_FAMILIES:?BENCH_FAMILIES=op,op}" --kernel-only \
    --json "$OUT/bench.json" --markdown "$OUT/bench.md" > "$OUT/bench.log" 2>&1
  echo "bench: rc=$? $(tail -n 1 "$OUT/bench.log")" | tee -a "$OUT/summary.txt" )
