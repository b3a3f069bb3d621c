#!/usr/bin/env bash
# One device call for issue 18's GPU numbers (never run yet: sizes estimated, not measured):
#   1. gpu_train_bench.py --layout both --compile: DD rows vs flat (FlexAttention through
#      cu_seqlens) vs concat, 160m, step costs per length, step times in the loop against the
#      ideal, graphs compiled per run, then short training runs;              at most 330 s
#   2. gpu_torchtitan.py: torchtitan 0.3.0's Trainer on DDDataLoader (flat, FlexAttention from
#      positions), llama3 1B, 8192 x 2 tokens per step, 16 steps + resume from step 8 through
#      its CheckpointManager; installs the carried wheels first (the image has no torchtitan)
#                                                                            at most 200 s
# Prepare here first (bash benchmarks/gpu_data.sh), then on the device:
#   run(command="bash benchmarks/gpu_session.sh", carry=["gpu-data", "gpu-wheels"], timeout_s=590)
# Everything lands in $OUT (7 files: train_*.{md,json,png}, *_runs.tar.gz, titan_*.{json,md},
# log). Each part is cut off by `timeout` and the next still runs; a part that fails is logged.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    python3 -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__)"
    echo "== gpu_train_bench.py --layout both --compile  $(date -u +%T)"
    PYTHONPATH=src timeout 330 python3 benchmarks/gpu_train_bench.py --data gpu-data \
        --sizes 160m --methods dd,concat --layout both --compile --step-steps 24 --skip 6 \
        --cost-iters 3 --cost-warmup 1 --train-minutes 0.25 --out "$OUT" --runs /tmp/runs
    echo "== exit $?  $(date -u +%T)"
    echo "== gpu_torchtitan.py  $(date -u +%T)"
    python3 -m pip install -q --no-index --no-deps --target /tmp/ttlib gpu-wheels/*.whl
    PYTHONPATH=/tmp/ttlib:src timeout 200 python3 benchmarks/gpu_torchtitan.py --data gpu-data \
        --out "$OUT" --flavor 1B --seq-len 8192 --local-batch-size 2 --steps 16 --skip 4
    echo "== exit $?  $(date -u +%T)"
} 2>&1 | tee "$OUT/log"
