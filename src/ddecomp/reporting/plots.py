"""PNG figures for ``ddecomp stats --plot`` and ``ddecomp plan``.

Figures are built on :class:`matplotlib.figure.Figure` with the Agg canvas, never through
``pyplot``: no screen, no global figure registry, nothing left open between calls. Every figure
is saved to a temporary name in the target directory and renamed into place, so a reader never
sees a half-written PNG and a failed save leaves nothing behind.

- :func:`plot_stats` draws a :func:`ddecomp.data.stats.compute_stats` dict: the document length
  histogram (share of documents and share of tokens per log2-spaced bin, log x, min/max length
  and bucket boundaries marked) and the token share per bucket.
- :func:`plot_plan` draws a training plan: the sequence length of every step (log2 y, the
  curriculum's saw-tooth) and the token share per bucket.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from ddecomp.decompose import bucket_lengths_for
from ddecomp.errors import UserError
from ddecomp.io import atomic_file

_DOCS_COLOR = "#4c72b0"
_TOKENS_COLOR = "#dd8452"
_BAR_COLOR = "#55a868"
_DPI = 110


def save_png_atomic(fig: Figure, path: str | Path) -> None:
    """Render ``fig`` as PNG to a temp file next to ``path`` and rename it into place."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise UserError(f"plot file {str(path)!r} must end in .png")
    if not path.parent.is_dir():
        raise UserError(f"plot file {str(path)!r}: directory {str(path.parent)!r} does not exist")
    FigureCanvasAgg(fig)  # attaches the Agg canvas to the figure
    try:
        with atomic_file(path) as f:
            fig.savefig(f, format="png", dpi=_DPI)
    except OSError as e:
        raise UserError(f"plot file {str(path)!r}: cannot write there ({e.strerror})") from e


def _plain(text: str) -> str:
    """Escape ``$`` so a path or title is drawn as typed, not parsed as mathtext."""
    return text.replace("$", r"\$")


def _fmt_len(x: float, _pos: object = None) -> str:
    """Axis label for a length: 256, 8k, 1M."""
    if x >= 1 << 20 and x % (1 << 20) == 0:
        return f"{int(x) >> 20}M"
    if x >= 1 << 10 and x % (1 << 10) == 0:
        return f"{int(x) >> 10}k"
    return f"{x:g}"


def _share_bars(ax: Axes, lengths: Sequence[int], tokens: Sequence[int], title: str) -> None:
    """Bars of each bucket's share of tokens, labelled with the percentage (empty buckets: 0%)."""
    total = float(sum(tokens))
    shares = [100.0 * t / total if total else 0.0 for t in tokens]
    x = np.arange(len(lengths))
    bars = ax.bar(x, shares, color=_BAR_COLOR, width=0.7)
    ax.bar_label(bars, labels=[f"{s:.1f}%" for s in shares], padding=2, fontsize=9)
    ax.set_xticks(x, [_fmt_len(L) for L in lengths])
    ax.set_xlabel("bucket: sequence length L (targets)")
    ax.set_ylabel("share of tokens (%)")
    ax.set_ylim(0, max([*shares, 1.0]) * 1.18)
    ax.set_title(title, fontsize=11)
    ax.grid(axis="y", alpha=0.3)
    if not total:
        ax.text(0.5, 0.5, "no tokens", transform=ax.transAxes, ha="center", va="center")


def _length_hist(ax: Axes, stats: Mapping[str, Any]) -> None:
    hist = stats["doc_length_hist"]
    edges = np.asarray(hist["edges"], dtype=np.float64)
    docs = np.asarray(hist["documents"], dtype=np.float64)
    toks = np.asarray(hist["tokens"], dtype=np.float64)
    n_docs, n_toks = docs.sum(), toks.sum()
    if n_docs:
        ax.stairs(
            100 * docs / n_docs,
            edges,
            fill=True,
            alpha=0.55,
            color=_DOCS_COLOR,
            label=f"documents ({int(n_docs):,})",
        )
        ax.stairs(
            100 * toks / n_toks,
            edges,
            linewidth=2,
            color=_TOKENS_COLOR,
            label=f"tokens ({int(n_toks):,})",
        )
    else:
        ax.text(0.5, 0.5, "no documents", transform=ax.transAxes, ha="center", va="center")
    ax.set_xscale("log", base=2)
    lo, hi = stats["min_len"], stats["max_len"]
    ax.set_xlim(1, max(float(edges[-1]), 2.0 * hi))
    ax.xaxis.set_major_locator(LogLocator(base=2, numticks=30))
    ax.xaxis.set_major_formatter(FuncFormatter(_fmt_len))
    ax.xaxis.set_minor_formatter(NullFormatter())
    # A document needs min+1 tokens (min targets) to keep anything; shade what is dropped whole.
    ax.axvspan(1, lo + 1, color="0.85", zorder=0, label=f"dropped whole (< {lo + 1} tokens)")
    for L in bucket_lengths_for(lo, hi)[1:-1]:
        ax.axvline(L + 1, color="0.5", linestyle=":", linewidth=1)
    ax.axvline(lo + 1, color="black", linestyle="--", linewidth=1.2, label=f"min {_fmt_len(lo)}")
    ax.axvline(
        hi + 1,
        color="firebrick",
        linestyle="--",
        linewidth=1.2,
        label=f"max {_fmt_len(hi)} (longer: split)",
    )
    ax.set_xlabel("document length (tokens, EOS included; dotted: bucket boundaries)")
    ax.set_ylabel("share per bin (%)")
    # Headroom above the tallest bin for a flat legend, so it never hides a curve.
    top = max([1.0, *(100 * docs / max(n_docs, 1)), *(100 * toks / max(n_toks, 1))])
    ax.set_ylim(0, top * 1.3)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", ncol=3)
    pct = stats["doc_length"]
    if pct["count"]:
        ax.set_title(
            f"Document lengths: median {pct['p50']:,.0f}, mean {pct['mean']:,.0f}, "
            f"p90 {pct['p90']:,.0f}, max {pct['max']:,}",
            fontsize=11,
        )


def plot_stats(stats: Mapping[str, Any], path: str | Path) -> None:
    """Two panels from a :func:`~ddecomp.data.stats.compute_stats` dict, saved as PNG at
    ``path``."""
    fig = Figure(figsize=(10, 8.5), layout="constrained")
    ax_hist, ax_share = fig.subplots(2, 1)
    _length_hist(ax_hist, stats)
    buckets = stats["buckets"]
    dropped = stats["dropped"]
    ctx = stats["attention_context"]
    ratio = stats["attention_flop_ratio"]["dd_vs_cc"]
    share_title = f"Token share per bucket ({stats['kept_targets']:,} trained targets"
    if dropped["share"] is not None:
        share_title += f"; dropped {100 * dropped['share']:.1f}% of tokens"
    share_title += ")"
    _share_bars(ax_share, [b["L"] for b in buckets], [b["tokens"] for b in buckets], share_title)
    head = _plain(f"{stats['root']} [{stats['split']}]")
    if ctx["dd"] is not None and ratio is not None:
        head += (
            f"\nmean attention context at {_fmt_len(ctx['max_len'])}: DD {ctx['dd']:,.0f}, "
            f"C&C {ctx['cc']:,.0f}, C&C+doc mask {ctx['cc_doc_mask']:,.0f}  "
            f"(attention FLOPs DD/C&C {ratio:.2f}x)"
        )
    fig.suptitle(head, fontsize=11)
    save_png_atomic(fig, path)


def plot_plan(
    step_lengths: np.ndarray, bucket_tokens: dict[int, int], path: str | Path, title: str = ""
) -> None:
    """Sequence length per step (top, log2 y) and token share per bucket (bottom), as PNG.

    ``step_lengths[i]`` is the row length L of step ``i``; ``bucket_tokens`` maps every bucket
    L (empty ones included, they show as 0%) to the tokens the plan draws from it.
    """
    steps = np.asarray(step_lengths, dtype=np.int64).ravel()
    fig = Figure(figsize=(10, 7.5), layout="constrained")
    ax_steps, ax_share = fig.subplots(2, 1, height_ratios=[1.3, 1])
    lengths = sorted(bucket_tokens)
    if steps.size:
        x = np.arange(steps.size)
        w = steps.size // 200  # running-mean window: 1/200 of the run
        if w < 10:
            # Few steps: every step readable, a faint line shows the order of buckets.
            ax_steps.plot(x, steps, drawstyle="steps-mid", linewidth=0.8, alpha=0.5,
                          color=_DOCS_COLOR)  # fmt: skip
            ax_steps.scatter(x, steps, s=14, color=_DOCS_COLOR, linewidths=0)
        else:
            # Many steps: a line between levels would fill the panel, dots form one band per
            # bucket, and the running mean of log2 L draws the cycles' short-to-long ramps.
            ax_steps.scatter(x, steps, s=6, marker=".", color=_DOCS_COLOR, linewidths=0,
                             label="step length")  # fmt: skip
            run = np.convolve(np.log2(steps.astype(np.float64)), np.ones(w) / w, mode="valid")
            ax_steps.plot(x[w - 1 :], np.exp2(run), color=_TOKENS_COLOR, linewidth=1.5,
                          label=f"running geometric mean ({w} steps)")  # fmt: skip
            ax_steps.legend(fontsize=8, loc="lower right")
        ax_steps.set_xlim(-0.5, steps.size - 0.5)
    else:
        ax_steps.text(0.5, 0.5, "no steps", transform=ax_steps.transAxes, ha="center")
    ax_steps.set_yscale("log", base=2)
    ticks = sorted(set(lengths) | set(np.unique(steps).tolist()))
    if ticks:
        ax_steps.set_yticks(ticks, [_fmt_len(t) for t in ticks])
        ax_steps.set_ylim(ticks[0] / 1.3, ticks[-1] * 1.3)
    ax_steps.yaxis.set_minor_formatter(NullFormatter())
    ax_steps.set_xlabel("optimizer step")
    ax_steps.set_ylabel("sequence length L")
    ax_steps.set_title(f"Sequence length per step ({steps.size:,} steps)", fontsize=11)
    ax_steps.grid(alpha=0.3)
    _share_bars(
        ax_share,
        lengths,
        [int(bucket_tokens[L]) for L in lengths],
        f"Token share per bucket ({sum(int(v) for v in bucket_tokens.values()):,} tokens)",
    )
    if title:
        fig.suptitle(_plain(title), fontsize=12)
    save_png_atomic(fig, path)
