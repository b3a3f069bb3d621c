"""A trillion tokens: plan + first batch at 10^9..10^12 tokens, and loader speed by row order.

1. Plan and first batch (synthetic bucket counts, no data): DCLM-like token shares over
   256..8192, 4,194,304 tokens per step (238,418 steps at 10^12), grow-p2, 8 cycles, the run of
   all the data (``total_tokens``). In a fresh process per scale: build the plan, then rank 0 of
   8's rows of step 0 and of a step in the second half (the old order materialised every
   bucket's permutation on the first query). Time and peak RSS of the process.
2. Loader tokens/s at L = 256 and 8192: ``make_batch`` over a prepared synthetic dataset (16M
   tokens), rows from ``plan.rank_rows``, 400 steps of that length (repeated when the bucket has
   fewer), best of 5, the new order vs the old.

Run each part with the code under test on ``PYTHONPATH``; ``--old SRC`` also runs it with the old
order's source tree (e.g. ``git archive <commit> src | tar -x -C /tmp/old``) for the before
numbers. Usage: ``PYTHONPATH=src python benchmarks/bench_scale.py [--old /tmp/old/src]
[--md OUT.md]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

# DCLM-like token shares per bucket (docs/method.md section 6), min 256, max 8192
SHARES = {256: 0.13, 512: 0.14, 1024: 0.15, 2048: 0.16, 4096: 0.17, 8192: 0.25}
TPS = 1 << 22
SCALES = (10**9, 10**10, 10**11, 10**12)

_PLAN = r"""
import json, resource, sys, time
from ddecomp.loading.plan import build_plan
tokens, tps = int(sys.argv[1]), int(sys.argv[2])
shares = json.loads(sys.argv[3])
rows = {int(L): int(tokens * s / int(L)) for L, s in shares.items()}
t0 = time.perf_counter()
plan = build_plan(rows, tps, "grow-p2", 8, 0, total_tokens=tokens)
t1 = time.perf_counter()
first = plan.rank_rows(0, 0, 8)
t2 = time.perf_counter()
later = plan.rank_rows(len(plan) * 3 // 4, 0, 8)
t3 = time.perf_counter()
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"steps": len(plan), "rows": sum(rows.values()), "plan_s": t1 - t0,
                  "first_batch_s": t2 - t1, "later_batch_s": t3 - t2, "peak_rss": rss,
                  "first_rows": int(first.size)}))
"""

_LOADER = r"""
import json, sys, time
import numpy as np
from ddecomp import open_dataset
from ddecomp.loading.plan import build_plan
from ddecomp.loading.vsl import make_batch
ds = open_dataset(sys.argv[1])
out = {}
for L in (256, 8192):
    plan = build_plan(ds.bucket_rows, 65536, "natural", 1, 0, oom_probe=False)
    steps = np.flatnonzero(plan.step_length == L)[:200].tolist()
    steps = (steps * (1 + 400 // max(1, len(steps))))[:400]  # >= 400 steps timed per round
    best = 0.0
    for _ in range(5):
        t = time.perf_counter()
        n = 0
        for s in steps:
            b = make_batch(ds, plan, s, plan.rank_rows(s, 0, 1))
            n += b["input_ids"].numel()
        best = max(best, n / (time.perf_counter() - t))
    out[L] = {"steps": len(steps), "tokens_per_s": best}
print(json.dumps(out))
"""


def run(code: str, src: str, *args: str, timeout: int = 900) -> dict | str:
    env = {**os.environ, "PYTHONPATH": src}
    try:
        res = subprocess.run(
            [sys.executable, "-c", code, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return f"over {timeout} s"
    if res.returncode:
        return f"failed ({res.returncode}): {res.stderr.strip().splitlines()[-1:]}"
    return json.loads(res.stdout)


def synthetic_dataset(out: Path) -> Path:
    from benchlib import synth_tokens

    from ddecomp import TokensConfig, prepare_tokens

    toks = synth_tokens(16_000_000, 600, 1.0, seed=0)  # web-like: many short rows
    src = out / "tokens.bin"
    toks.tofile(src)
    cfg = TokensConfig(src, out / "ds", eos_id=50256, dtype="uint16", min_len=256, max_len=8192,
                       val_fraction=0.0, quiet=True)  # fmt: skip
    prepare_tokens(cfg)
    return out / "ds"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", help="source tree (src/) of the old order, for the before numbers")
    ap.add_argument("--old-max", type=float, default=1e11, help="largest scale run on --old")
    ap.add_argument("--md", help="also write the tables as Markdown here")
    ap.add_argument("--loader-only", action="store_true", help="only part 2 (loader tokens/s)")
    args = ap.parse_args()
    new = os.environ.get("PYTHONPATH", "src")
    sys.path.insert(0, str(Path(__file__).parent))
    from benchlib import hardware

    hw = hardware()
    lines = [f"machine: {hw}", "", "## Plan and first batch (synthetic counts, no data)", ""]
    lines += [f"{TPS:,} tokens per step, grow-p2, 8 cycles, the run of all the data; "
              "rank 0 of 8", "",
              "| tokens | rows | steps | order | plan s | first batch s | batch at 3/4 s | "
              "peak RSS MB |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    shares = json.dumps(SHARES)
    for tokens in () if args.loader_only else SCALES:
        for name, src in (("new", new), ("old", args.old)):
            if src is None or (name == "old" and tokens > args.old_max):
                continue
            r = run(_PLAN, src, str(tokens), str(TPS), shares)
            if isinstance(r, str):
                lines.append(f"| {tokens:.0e} | | | {name} | {r} | | | |")
                continue
            lines.append(
                f"| {tokens:.0e} | {r['rows']:,} | {r['steps']:,} | {name} | {r['plan_s']:.3f} | "
                f"{r['first_batch_s']:.4f} | {r['later_batch_s']:.4f} | "
                f"{r['peak_rss'] / 2**20:.0f} |"
            )
            print(lines[-1], flush=True)
    lines += ["", "## Loader tokens/s by row order (16M-token web-like synthetic dataset, "
              "65,536 tokens per step, 400 steps, best of 5)", "",
              "| L | new tokens/s | old tokens/s | new / old |", "|---|---|---|---|"]  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        ds = synthetic_dataset(Path(tmp))
        got = {name: run(_LOADER, src, str(ds)) for name, src in (("new", new), ("old", args.old))
               if src is not None}  # fmt: skip
    for L in ("256", "8192"):
        n = got["new"]
        o = got.get("old")
        if isinstance(n, str) or isinstance(o, str):
            lines.append(f"| {L} | {n} | {o} | |")
            continue
        nt = n[L]["tokens_per_s"]
        ot = o[L]["tokens_per_s"] if o else float("nan")
        lines.append(f"| {L} | {nt / 1e6:,.0f}M | {ot / 1e6:,.0f}M | {nt / ot:.2f} |")
    text = "\n".join(lines)
    print(text)
    if args.md:
        Path(args.md).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
