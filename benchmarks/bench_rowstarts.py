"""Row starts in memory vs mapped from the shards' files (``ddecomp.data.rowstarts``).

On one prepared dataset (default: the 200M-token web-like variant ``bench_loader.py`` prepares
under ``--data``), each kind in turn (``EAGER_ROWS`` set to 0 forces the mapped kind): opening
(seconds, and the Python heap's peak by tracemalloc: the starts array is 8 bytes per row) and a
full grow-p2 epoch of ``VSLLoader`` at 65,536 tokens per step (tokens/s, best of ``--repeat``).
Prints one JSON line per kind and writes them to ``--out``.

    python benchmarks/bench_rowstarts.py --data /tmp/ddecomp_bench_loader/web --out X.json
"""

from __future__ import annotations

import argparse
import json
import time
import tracemalloc
from pathlib import Path

import ddecomp.data.rowstarts as rowstarts
from ddecomp.data.dataset import open_dataset
from ddecomp.loading.vsl import VSLLoader
from ddecomp.loading.world import World


def measure(data: Path, repeat: int) -> dict[str, float]:
    tracemalloc.start()
    t = time.perf_counter()
    ds = open_dataset(data)
    open_s = time.perf_counter() - t
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    best = 0.0
    for _ in range(repeat):
        ld = VSLLoader(ds, tokens_per_step=65536, seed=0, world=World())
        n, t = 0, time.perf_counter()
        for b in ld:
            n += b["input_ids"].numel()
        best = max(best, n / (time.perf_counter() - t))
    rows = sum(ds.bucket_rows.values())
    return {"rows": rows, "open_s": open_s, "open_heap_peak_mb": peak / 2**20,
            "epoch_tokens_per_s": best}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path("/tmp/ddecomp_bench_loader/web"))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    res = {}
    for kind, limit in (("in memory", rowstarts.EAGER_ROWS), ("mapped", 0)):
        rowstarts.EAGER_ROWS = limit
        res[kind] = measure(args.data, args.repeat)
        print(json.dumps({kind: res[kind]}), flush=True)
    if args.out:
        args.out.write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
