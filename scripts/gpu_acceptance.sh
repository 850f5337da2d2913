#!/usr/bin/env bash
# Everything the issues ask to see on a GPU, in one call of the device tool
# (each call may land on a bare machine, and FlashInfer compiles each kernel
# family on first use: one long call costs less than many short ones).
#
# Here, first:  bash ../shared/device/fetch-wheels.sh && python3 -m pip wheel -q --no-deps -w .whl .
#               (plus any wheel the GPU tests need that the device lacks)
# Then run, with carry [".whl"]:  bash scripts/gpu_acceptance.sh
# Results land in $OUT (logs, the startup table, check's JSON).
set -uo pipefail
OUT=${OUT:-/tmp/gpu-acceptance}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
python3 -m pip install -q --no-index --no-deps --no-compile .whl/*.whl || exit 2
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$OUT/gpu.txt"
# 1. every GPU test (routing, policies, engine call patterns, launch path, compile)
timeout 420 python3 -m pytest -q -m gpu -p no:cacheprovider -x tests ${GPU_TESTS_K:+-k "$GPU_TESTS_K"} 2>&1 | tee "$OUT/pytest_gpu.log" | tail -n 30
# 2. start-up: import flashinfer with and without the hook (bundled folder)
timeout 240 python3 scripts/bench_startup.py --rounds 3 --markdown 2>&1 | tee "$OUT/startup.md"
# 3. the main job on the GPU
timeout 300 flashinfer-trace-apply check --batch 1 --batch 127 --no-timing -q --save-json "$OUT/check.json" 2>&1 | tail -n 5 | tee "$OUT/check_tail.txt"
