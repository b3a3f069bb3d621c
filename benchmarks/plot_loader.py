"""Plot bench_loader.py's JSON: tokens/s per bucket length, loader vs the plain-gather limit.

python benchmarks/plot_loader.py benchmarks/results/loader_cpu-2core_2026-11-26.json
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
    variants = res["variants"]
    fig = Figure(figsize=(5.5 * len(variants), 4.2), layout="constrained")
    axes = fig.subplots(1, len(variants), squeeze=False)[0]
    for ax, (name, v) in zip(axes, variants.items(), strict=True):
        lengths = [int(L) for L in v["per_length"]]
        for key, label, style in (
            ("loader_tokens_per_s", "VSLLoader batch", "o-"),
            ("gather_tokens_per_s", "plain gather, reused buffer (limit)", "s--"),
            ("gather_fresh_buffer_tokens_per_s", "plain gather, fresh buffer", "^:"),
        ):
            ax.plot(lengths, [v["per_length"][str(L)][key] / 1e6 for L in lengths], style,
                    label=label)  # fmt: skip
        epoch = next(e for e in v["epochs"] if e["workers"] == 0)["tokens_per_s"] / 1e6
        ax.axhline(epoch, color="k", lw=0.8, label=f"full grow-p2 epoch: {epoch:.0f}M/s")
        ax.axhline(100, color="r", lw=0.8, ls=":", label="target 100M/s")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("sequence length L")
        ax.set_ylabel("million tokens / s (one process)")
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    hw = res["hardware"]
    fig.suptitle(f"loader throughput from page cache, {hw['cpu']} x{hw['cores']}, {hw['date']}")
    out = args.out or args.json.with_suffix(".png")
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
