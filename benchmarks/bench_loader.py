"""Loader throughput from page cache: VSLLoader over a full grow-p2 epoch vs a plain gather.

Builds a synthetic token file under /tmp (log-normal document lengths, mean ~600 tokens, and a
long-document variant), prepares it with ``prepare_tokens`` (256..8192), warms the page cache and
serves one epoch per configuration in this process. Reported: tokens/s per process for the whole
epoch and per bucket length, and the "limit": a plain random-row gather of the same rows into an
int64 buffer (one slice copy per row, no loader). Targets: >= 100M tokens/s for the
epoch, >= 50% of the gather limit at L = 8192. Also timed: the same epoch through a
:class:`~ddecomp.data.blend.Blend` of one source, and of the dataset as two sources at factor 0.5.

    python benchmarks/bench_loader.py --tokens 200_000_000 --out benchmarks/results/X.json

``--open DIR [DIR ...]`` instead times only ``open_dataset`` on prepared datasets (e.g. the
default corpus, ``ddecomp prepare --out data/stdlib --val-fraction 0.02``): the first open in
each of ``--open-repeat`` fresh interpreters (imports done before the clock starts; the page
cache is whatever the machine holds, so "cold-ish") and ``--open-repeat`` further opens in one
process (warm), medians, with the share spent in the manifest and file checks::

    python benchmarks/bench_loader.py --open data/stdlib --out benchmarks/results/open_X.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from benchlib import EOS, hardware, synth_tokens, warm

from ddecomp.data.blend import Blend
from ddecomp.data.dataset import open_dataset
from ddecomp.loading.vsl import VSLLoader, make_batch
from ddecomp.loading.world import World
from ddecomp.preparing.pipeline import TokensConfig, prepare_tokens


def bench_epoch(ds: Any, tps: int, workers: int, repeat: int = 1) -> dict[str, Any]:
    best = None
    for _ in range(repeat):
        loader = VSLLoader(ds, tokens_per_step=tps, curriculum="grow-p2", cycles=8, seed=0,
                           world=World(num_workers=workers))  # fmt: skip
        n = 0
        t = time.perf_counter()
        for b in loader:
            n += b["input_ids"].numel()
        dt = time.perf_counter() - t
        if best is None or dt < best[1]:
            best = (n, dt, len(loader))
    assert best is not None
    n, dt, steps = best
    return {"workers": workers, "steps": steps, "tokens": n, "seconds": dt, "tokens_per_s": n / dt}


def _gather(ds: Any, starts: list[np.ndarray], L: int, fresh: bool) -> float:
    """Seconds for a plain gather of the rows: one slice copy each into an int64 buffer."""
    B = starts[0].size
    buf = np.empty((B, L + 1), dtype=np.int64)
    t = time.perf_counter()
    for st in starts:
        if fresh:
            buf = np.empty((B, L + 1), dtype=np.int64)
        for i, s in enumerate(st.tolist()):
            buf[i] = ds.tokens(s, s + L + 1)
    return time.perf_counter() - t


def bench_per_length(ds: Any, tps: int, repeat: int = 3) -> dict[int, dict[str, float]]:
    """Per bucket (best of ``repeat``): loader batches vs a plain gather of the same rows."""
    loader = VSLLoader(ds, tokens_per_step=tps, curriculum="grow-p2", cycles=8, seed=0,
                       world=World())  # fmt: skip
    plan = loader.plan
    out: dict[int, dict[str, float]] = {}
    for L in plan.lengths:
        steps = np.flatnonzero(plan.step_length == L)[:400].tolist()
        if not steps:
            continue
        starts = [ds.row_starts(L)[plan.global_rows(s)] for s in steps]
        best = [np.inf, np.inf, np.inf]
        for _ in range(repeat):
            t = time.perf_counter()
            for s in steps:
                make_batch(ds, plan, s, plan.rank_rows(s, 0, 1))
            best[0] = min(best[0], time.perf_counter() - t)
            best[1] = min(best[1], _gather(ds, starts, L, fresh=False))
            best[2] = min(best[2], _gather(ds, starts, L, fresh=True))
        n = len(steps) * tps
        out[L] = {
            "steps": len(steps),
            "loader_tokens_per_s": n / best[0],
            "gather_tokens_per_s": n / best[1],
            "gather_fresh_buffer_tokens_per_s": n / best[2],
            "ratio": best[1] / best[0],
        }
    return out


def bench_baselines(ds: Any, tps: int, seq_len: int, steps: int = 300) -> dict[str, Any]:
    from ddecomp.loading.concat import ConcatChunkLoader
    from ddecomp.loading.pack import PackedLoader

    res: dict[str, Any] = {}
    for name, make in (
        (
            "concat",
            lambda: ConcatChunkLoader(ds, seq_len=seq_len, tokens_per_step=tps, world=World()),
        ),
        (
            "concat-dm",
            lambda: ConcatChunkLoader(
                ds, seq_len=seq_len, tokens_per_step=tps, doc_mask=True, world=World()
            ),
        ),
        ("pack", lambda: PackedLoader(ds, seq_len=seq_len, tokens_per_step=tps, world=World())),
    ):
        t = time.perf_counter()
        ld = make()
        build = time.perf_counter() - t
        n = 0
        t = time.perf_counter()
        for i, b in enumerate(ld):
            n += b["input_ids"].numel()
            if i + 1 == steps:
                break
        res[name] = {"build_s": build, "tokens_per_s": n / (time.perf_counter() - t),
                     "summary": ld.summary()}  # fmt: skip
        print(f"  baseline {name}: build {build:.2f} s, "
              f"{res[name]['tokens_per_s'] / 1e6:.0f}M tokens/s", flush=True)  # fmt: skip
    return res


def bench_blend(ds: Any, tps: int) -> dict[str, Any]:
    """A grow-p2 epoch through :class:`~ddecomp.data.blend.Blend`: one source (the indirection
    alone),
    and the same dataset as two sources at 0.5 each (every batch gathered from two sources)."""
    res = {}
    for name, sources in (("1 source x 1", [(ds, 1.0)]), ("2 sources x 0.5", [(ds, 0.5)] * 2)):
        res[name] = bench_epoch(Blend(sources), tps, 0, repeat=2)
    return res


def run_variant(name: str, toks: np.ndarray, root: Path, tps: int, workers: list[int]) -> dict:
    t = time.perf_counter()
    prepare_tokens(
        TokensConfig(toks, root, eos_id=EOS, min_len=256, max_len=8192, workers=2, overwrite=True)
    )
    prep_s = time.perf_counter() - t
    ds = open_dataset(root)
    warm(root)
    print(f"[{name}] {toks.size / 1e6:.0f}M tokens prepared in {prep_s:.1f} s; {ds}", flush=True)
    rows = {str(k): v for k, v in ds.bucket_rows.items()}
    res: dict[str, Any] = {"tokens": int(toks.size), "prepare_s": prep_s, "bucket_rows": rows}
    res["epochs"] = []
    for w in workers:
        r = bench_epoch(ds, tps, w, repeat=2 if w == 0 else 1)
        print(f"[{name}] grow-p2 epoch, {w} workers: {r['steps']} steps, "
              f"{r['tokens_per_s'] / 1e6:.0f}M tokens/s", flush=True)  # fmt: skip
        res["epochs"].append(r)
    res["blend"] = bench_blend(ds, tps)
    for k, v in res["blend"].items():
        print(f"[{name}] blend {k}: {v['tokens_per_s'] / 1e6:.0f}M tokens/s", flush=True)
    res["per_length"] = {str(k): v for k, v in bench_per_length(ds, tps).items()}
    for L, v in res["per_length"].items():
        fresh = v["gather_fresh_buffer_tokens_per_s"] / 1e6
        print(f"[{name}] L={L:>5}: loader {v['loader_tokens_per_s'] / 1e6:6.0f}M/s, gather limit "
              f"{v['gather_tokens_per_s'] / 1e6:6.0f}M/s ({100 * v['ratio']:.0f}%), fresh-buffer "
              f"gather {fresh:6.0f}M/s", flush=True)  # fmt: skip
    res["baselines"] = bench_baselines(ds, tps, 8192)
    return res


_OPEN_CHILD = """
import json, sys, time
from pathlib import Path
from ddecomp.data.dataset import open_dataset
from ddecomp.data.files import check_files
from ddecomp.data.layout import MANIFEST, check_manifest, load_manifest
root, n = Path(sys.argv[1]), int(sys.argv[2])
t = time.perf_counter()
ds = open_dataset(root)
first = time.perf_counter() - t
warm, checks = [], []
for _ in range(n):
    t = time.perf_counter()
    open_dataset(root)
    warm.append(time.perf_counter() - t)
    man = load_manifest(root)
    t = time.perf_counter()
    check_manifest(man, root / MANIFEST)
    check_files(root, man)
    checks.append(time.perf_counter() - t)
print(json.dumps({"first_s": first, "warm_s": warm, "checks_s": checks, "tokens": ds.num_tokens}))
"""


def bench_open(root: Path, repeat: int) -> dict[str, Any]:
    """open_dataset: first open per fresh interpreter (median of ``repeat``) and warm opens."""
    firsts, warms, checks = [], [], []
    for _ in range(repeat):
        out = subprocess.run([sys.executable, "-c", _OPEN_CHILD, str(root), str(repeat)],
                             check=True, capture_output=True, text=True).stdout  # fmt: skip
        r = json.loads(out)
        firsts.append(r["first_s"])
        warms += r["warm_s"]
        checks += r["checks_s"]
    return {"dir": str(root), "repeat": repeat, "first_open_ms": 1e3 * statistics.median(firsts),
            "warm_open_ms": 1e3 * statistics.median(warms),
            "warm_checks_ms": 1e3 * statistics.median(checks),
            "first_open_all_ms": [1e3 * f for f in firsts]}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=int, default=200_000_000, help="synthetic tokens per variant")
    ap.add_argument("--tokens-per-step", type=int, default=65536)
    ap.add_argument("--workers", default="0,2", help="comma list of num_workers to time")
    ap.add_argument("--tmp", default="/tmp/ddecomp_bench_loader", help="scratch directory")
    ap.add_argument("--out", default="benchmarks/results/loader_cpu-2core_2026-11-27.json")
    ap.add_argument("--open", nargs="+", type=Path, help="only time open_dataset on these DIRs")
    ap.add_argument("--open-repeat", type=int, default=9)
    args = ap.parse_args()
    hw = hardware()
    hw["loadavg_start"] = list(os.getloadavg())
    print(f"hardware: {hw}", flush=True)
    if args.open:
        res: dict[str, Any] = {"hardware": hw}
        res["open"] = [bench_open(d, args.open_repeat) for d in args.open]
        hw["loadavg_end"] = list(os.getloadavg())
        for r in res["open"]:
            print(f"open {r['dir']}: first open in a fresh process {r['first_open_ms']:.1f} ms "
                  f"(median of {r['repeat']}), warm {r['warm_open_ms']:.2f} ms, of it checks "
                  f"{r['warm_checks_ms']:.2f} ms; load {hw['loadavg_end']}")  # fmt: skip
        Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
        print(f"wrote {args.out}")
        return
    workers = [int(x) for x in args.workers.split(",")]
    tmp = Path(args.tmp)
    results: dict[str, Any] = {"hardware": hw, "tokens_per_step": args.tokens_per_step,
                               "variants": {}}  # fmt: skip
    variants = (("web (mean 600)", 600.0, 1.2), ("long docs (mean 4000)", 4000.0, 1.5))
    for name, mean, sigma in variants:
        toks = synth_tokens(args.tokens, mean, sigma, seed=0)
        results["variants"][name] = run_variant(
            name, toks, tmp / name.split()[0], args.tokens_per_step, workers
        )
        del toks
    hw["loadavg_end"] = list(os.getloadavg())
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
