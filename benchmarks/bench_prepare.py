"""Preparation speed: the index build alone, and a whole ``--from-tokens`` prepare.

Two synthetic GPT-2-like token corpora (uint16, EOS 50256): long documents (log-normal, mean
~4000 tokens) and web-like ones (mean ~600, where per-document work dominates). For each:

- index build, one core: document boundaries (one ``tokens == eos`` pass), train/val split,
  vectorized decomposition, bucket offsets; exactly what a shard worker does before writing;
- whole ``prepare_tokens`` from a raw token file in page cache (copy into shards, sha256 of every
  byte written, manifest), with 1 and 2 worker processes.

Targets: index build >= 500M tokens/s on one core, whole prepare >= 300M tokens/s.

    python benchmarks/bench_prepare.py [--tokens 200000000]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
from benchlib import EOS, hardware, synth_tokens, warm

from ddecomp.preparing.pipeline import TokensConfig, prepare_tokens
from ddecomp.preparing.shards import IndexParams, build_index, document_fences


def best_of(fn: Any, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def bench_variant(toks: np.ndarray, tmp: Path, repeat: int) -> dict[str, Any]:
    params = IndexParams(256, 8192, "split", 0, 0.0)

    def index() -> None:
        fence, _ = document_fences(toks, EOS)
        build_index(fence, 0, params)

    res: dict[str, Any] = {"tokens": int(toks.size)}
    fence, _ = document_fences(toks, EOS)
    res["documents"] = int(fence.size - 1)
    res["index_build_s"] = best_of(index, repeat)
    res["index_tokens_per_s"] = toks.size / res["index_build_s"]
    src = tmp / "tokens.bin"
    toks.tofile(src)
    warm(tmp)
    for workers in (1, 2):
        out = tmp / f"out{workers}"

        def whole(out: Path = out, workers: int = workers) -> None:
            shutil.rmtree(out, ignore_errors=True)
            prepare_tokens(TokensConfig(src, out, EOS, workers=workers))

        dt = best_of(whole, repeat)
        res[f"prepare_w{workers}_s"] = dt
        res[f"prepare_w{workers}_tokens_per_s"] = toks.size / dt
        shutil.rmtree(out, ignore_errors=True)
    src.unlink()
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=int, default=200_000_000, help="tokens per corpus")
    ap.add_argument("--repeat", type=int, default=3, help="best of N runs")
    ap.add_argument("--tmp", default="/tmp/ddecomp_bench_prepare", help="scratch directory")
    ap.add_argument("--out", default="benchmarks/results/prepare_cpu-2core_2026-11-26.json")
    args = ap.parse_args()
    results: dict[str, Any] = {"hardware": hardware(), "variants": {}}
    print(f"hardware: {results['hardware']}", flush=True)
    for name, mean, sigma in (("long (mean 4000)", 4000.0, 1.5), ("web (mean 600)", 600.0, 1.2)):
        tmp = Path(args.tmp) / name.split()[0]
        tmp.mkdir(parents=True, exist_ok=True)
        r = bench_variant(synth_tokens(args.tokens, mean, sigma, seed=0), tmp, args.repeat)
        results["variants"][name] = r
        print(
            f"[{name}] {r['tokens'] / 1e6:.0f}M tokens, {r['documents']:,} documents: index build "
            f"{r['index_tokens_per_s'] / 1e6:,.0f}M tokens/s (1 core); whole prepare "
            f"{r['prepare_w1_tokens_per_s'] / 1e6:,.0f}M tokens/s (1 worker), "
            f"{r['prepare_w2_tokens_per_s'] / 1e6:,.0f}M tokens/s (2 workers)",
            flush=True,
        )
    shutil.rmtree(args.tmp, ignore_errors=True)
    out = Path(args.out)
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
