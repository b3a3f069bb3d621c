"""Plans of the benchmark corpora: mean length per tenth, per mode and run length (issue 10).

Pure numpy, no data read: the bucket rows are the tokens per bucket of the two benchmark corpora
(``results/compare_olmo_cpu-2core_2026-11-26.md``, min 256, three significant digits) divided by
the length. Prints, at 65,536 tokens per step:

1. one cycle, one pass: mean sequence length per tenth of the cycle for natural / uniform /
   grow-p2 in the ``release`` mode (default) and the ``odds`` mode (ddecomp's earlier ``sample``);
2. grow-p2, 8 cycles, runs of 0.1x, 1x and 3.5x the data (``total_tokens``): steps, passes per
   bucket, the per-tenth curve and the predicted step cost; and the time to build each plan.

Usage: ``PYTHONPATH=src python benchmarks/bench_plan.py [--md OUT.md]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

from ddecomp.loading.plan import build_plan

TPS = 65536
MILLION = 1_000_000
# tokens per bucket (millions), benchmark corpora, ddecomp's index, min 256
CORPORA = {
    "long (default)": {256: 2.30, 512: 4.00, 1024: 6.62, 2048: 9.97, 4096: 12.57, 8192: 42.05},
    "web-like": {256: 13.82, 512: 18.09, 1024: 16.41, 2048: 9.88, 4096: 3.87, 8192: 1.26},
}


def rows_of(tokens_m: dict[int, float]) -> dict[int, int]:
    return {L: round(t * MILLION / L) for L, t in tokens_m.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--md", help="also write the tables as Markdown here")
    args = ap.parse_args()
    out: list[str] = []
    for name, tok in CORPORA.items():
        rows = rows_of(tok)
        data = sum(L * n for L, n in rows.items())
        out += [f"## {name}: {data:,} tokens, {data // TPS:,} steps of {TPS:,} tokens", ""]
        out += [
            "| mode | curriculum | mean length per tenth of one cycle (seed 0) |",
            "|---|---|---|",
        ]
        for mode in ("release", "odds"):
            for cur in ("natural", "uniform", "grow-p2"):
                p = build_plan(rows, TPS, cur, 1, 0, mode=mode, oom_probe=False)
                curve = " ".join(f"{x:.0f}" for x in p.length_by_part(10))
                out.append(f"| {mode} | {cur} | {curve} |")
        out += ["", "| run | steps | passes per bucket (256..8192) | mean length per tenth "
                "(grow-p2, 8 cycles, release) | cost vs always-8192 | plan build |",
                "|---|---|---|---|---|---|"]  # fmt: skip
        for scale in (0.1, 1.0, 3.5):
            t = time.perf_counter()
            p = build_plan(rows, TPS, "grow-p2", 8, 0, total_tokens=int(scale * data))
            dt = time.perf_counter() - t
            s = p.summary()
            passes = " ".join(f"{p.passes(L):.2f}" for L in p.lengths)
            curve = " ".join(f"{x:.0f}" for x in s["mean_seq_len_by_tenth"])
            out.append(
                f"| {scale}x | {len(p):,} | {passes} | {curve} | "
                f"{s['relative_step_cost']:.3f} | {1000 * dt:.1f} ms |"
            )
        out.append("")
    text = "\n".join(out)
    print(text)
    if args.md:
        head = (
            f"# Plans of the benchmark corpora ({time.strftime('%Y-%m-%d')}, "
            f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, no GPU)\n\n"
            "`PYTHONPATH=src python benchmarks/bench_plan.py`; see its docstring.\n\n"
        )
        with open(args.md, "w") as f:
            f.write(head + text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
