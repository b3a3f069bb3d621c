"""Plot bench_flat.py's JSON: step time of the flat layout over the rows layout, per length.

python benchmarks/plot_flat.py benchmarks/results/flat_cpu-2core_2026-12-02.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from matplotlib.figure import Figure


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("json", type=Path)
    ap.add_argument("--out", type=Path, default=None, help="PNG (default: next to the JSON)")
    args = ap.parse_args()
    res = json.loads(args.json.read_text())
    sizes = sorted({r["size"] for r in res["steps"]}, key=["tiny", "small"].index)
    fig = Figure(figsize=(5.5 * len(sizes), 4.2), layout="constrained")
    axes = fig.subplots(1, len(sizes), squeeze=False)[0]
    for ax, size in zip(axes, sizes, strict=True):
        rows = [r for r in res["steps"] if r["size"] == size]
        Ls = [r["L"] for r in rows]
        ax.plot(Ls, [r["chunk_over_rows"] for r in rows], "o-", label="flat, per-sequence SDPA")
        ax.plot(Ls, [r["dense_over_rows"] for r in rows], "s--", label="flat, dense stream mask")
        ax.axhline(1.0, color="k", lw=0.8, label="rows (causal SDPA)")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length L")
        ax.set_ylabel("step time / rows layout's")
        ax.set_title(f"{size}, {rows[0]['T']:,} tokens per step, CPU")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    out = args.out or args.json.with_suffix(".png")
    fig.savefig(out, dpi=120)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
