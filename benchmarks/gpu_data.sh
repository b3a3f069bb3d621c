#!/usr/bin/env bash
# Prepare, on this machine, the two datasets gpu_train_bench.py reads on the device machine
# (whose image lacks zstandard and cannot fetch), and keep them out of git so `carry` takes them.
#   gpu-data: the default corpus (Python stdlib, BPE 8192), 2% held out      ~18 MB
#   gpu-web:  12M tokens of the benchmark corpus's web-like variant (GPT-2-sized vocab)  ~24 MB
#   gpu-wheels: torchtitan 0.3.0 and the packages of its imports the device image lacks, pure
#             Python wheels for its python3 (3.12), installed there with --no-deps  ~2.6 MB
# Idempotent: a rerun finds both prepared (ddecomp prepare resumes or does nothing).
# Then, on the device, either the whole session (carry ["gpu-data", "gpu-wheels"], timeout_s 590):
#   bash benchmarks/gpu_session.sh
# or the training benchmark alone (carry ["gpu-data", "gpu-web"], timeout_s ~560):
#   PYTHONUNBUFFERED=1 PYTHONPATH=src python3 benchmarks/gpu_train_bench.py --data gpu-data \
#       --extra-data gpu-web --out $OUT --runs /tmp/runs 2>&1 | tee $OUT/log
set -euo pipefail
cd "$(dirname "$0")/.."
ddecomp prepare --out gpu-data --val-fraction 0.02 --quiet
python benchmarks/corpus.py  # bench-data/ (a rerun with the same parameters does nothing)
if [ ! -f gpu-web/manifest.json ]; then
    tmp=$(mktemp)
    head -c 24000000 bench-data/web.tokens > "$tmp"  # 12M uint16 tokens
    ddecomp prepare --from-tokens "$tmp" --eos-id 50256 --out gpu-web --quiet
    rm -f "$tmp"
fi
if [ ! -f gpu-wheels/.done ]; then
    pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --platform manylinux2014_x86_64 --platform any -d gpu-wheels \
        torchtitan==0.3.0 torchdata==0.11.0 torch_checkpointing==0.1.1 datasets==4.7.0 \
        dill==0.4.0 multiprocess==0.70.18 tyro==1.0.17 docstring_parser==0.18.0 \
        typeguard==4.6.1 spmd_types==0.2.3
    touch gpu-wheels/.done
fi
for d in /gpu-data/ /gpu-web/ /gpu-wheels/; do
    grep -qxF "$d" .git/info/exclude 2>/dev/null || echo "$d" >> .git/info/exclude
done
du -sh gpu-data gpu-web gpu-wheels
