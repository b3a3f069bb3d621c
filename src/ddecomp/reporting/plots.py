"""PNG figures for ``ddecomp stats --plot``, ``ddecomp plan --plot`` and ``ddecomp compare --plot``.

Figures are built on :class:`matplotlib.figure.Figure` with the Agg canvas, never through
``pyplot``: no screen, no global figure registry, nothing left open between calls. Every figure
is saved to a temporary name in the target directory and renamed into place, so a reader never
sees a half-written PNG and a failed save leaves nothing behind.

- :func:`plot_stats` draws a :func:`ddecomp.data.stats.compute_stats` dict: the document length
  histogram (share of documents and share of tokens per log2-spaced bin, log x, min/max length
  and bucket boundaries marked) and the token share per bucket.
- :func:`plot_plan` draws a training plan: the sequence length of every step (log2 y, the
  curriculum's saw-tooth) and the token share per bucket.
- :func:`plot_runs` draws training runs side by side (:mod:`ddecomp.reporting.compare` loads them
  and makes the table): losses against tokens and time, validation loss per length and position.

One look for all of them: the helpers below (:func:`_panel`, :func:`_log2_lengths`,
:func:`_nothing`, the colours) are the only place a font size, grid or length axis is set.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter, FuncFormatter, LogLocator, NullFormatter

from ddecomp.decompose import bucket_lengths_for
from ddecomp.errors import UserError
from ddecomp.io import atomic_file
from ddecomp.reporting.retrieval import draw_task

if TYPE_CHECKING:
    from ddecomp.reporting.compare import Run

_DOCS_COLOR = "#4c72b0"
_TOKENS_COLOR = "#dd8452"
_BAR_COLOR = "#55a868"
_DPI = 110
_TITLE_SIZE = 11
_SMALL = 8  # legends and the panels of the six-panel comparison


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


def _panel(
    ax: Axes,
    title: str,
    xlabel: str,
    ylabel: str,
    *,
    grid: Literal["both", "x", "y"] = "both",
    size: float = _TITLE_SIZE,
) -> None:
    """Title, axis labels and a light grid: every panel of every figure."""
    ax.set_title(title, fontsize=size)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(axis=grid, alpha=0.3)


def _log2_lengths(ax: Axes, axis: Literal["x", "y"]) -> None:
    """A log2 axis of lengths labelled 256, 8k, 1M (no minor labels)."""
    scale = ax.xaxis if axis == "x" else ax.yaxis
    (ax.set_xscale if axis == "x" else ax.set_yscale)("log", base=2)
    scale.set_major_formatter(FuncFormatter(_fmt_len))
    scale.set_minor_formatter(NullFormatter())


def _nothing(ax: Axes, text: str) -> None:
    """Say in the panel why it is empty, instead of drawing empty axes."""
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center")


def _share_bars(ax: Axes, lengths: Sequence[int], tokens: Sequence[int], title: str) -> None:
    """Bars of each bucket's share of tokens, labelled with the percentage (empty buckets: 0%)."""
    total = float(sum(tokens))
    shares = [100.0 * t / total if total else 0.0 for t in tokens]
    x = np.arange(len(lengths))
    bars = ax.bar(x, shares, color=_BAR_COLOR, width=0.7)
    ax.bar_label(bars, labels=[f"{s:.1f}%" for s in shares], padding=2, fontsize=9)
    ax.set_xticks(x, [_fmt_len(L) for L in lengths])
    ax.set_ylim(0, max([*shares, 1.0]) * 1.18)
    _panel(ax, title, "bucket: sequence length L (targets)", "share of tokens (%)", grid="y")
    if not total:
        _nothing(ax, "no tokens")


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
        _nothing(ax, "no documents")
    _log2_lengths(ax, "x")
    lo, hi = stats["min_len"], stats["max_len"]
    ax.set_xlim(1, max(float(edges[-1]), 2.0 * hi))
    ax.xaxis.set_major_locator(LogLocator(base=2, numticks=30))
    # A document needs min+1 tokens (min targets) to keep anything; shade what is dropped whole.
    # With --tails pack they are kept, packed into tail rows.
    fate = "packed in tail rows" if stats.get("tail") else "dropped whole"
    ax.axvspan(1, lo + 1, color="0.85", zorder=0, label=f"{fate} (< {lo + 1} tokens)")
    for L in bucket_lengths_for(lo, hi)[1:-1]:
        ax.axvline(L + 1, color="0.5", linestyle=":", linewidth=1)
    ax.axvline(lo + 1, color="black", linestyle="--", linewidth=1.2, label=f"min {_fmt_len(lo)}")
    ax.axvline(
        hi + 1,
        color="firebrick",
        linestyle="--",
        linewidth=1.2,
        label=f"max {_fmt_len(hi)} (longer: {stats.get('long_docs') or 'cut'})",
    )
    # Headroom above the tallest bin for a flat legend, so it never hides a curve.
    top = max([1.0, *(100 * docs / max(n_docs, 1)), *(100 * toks / max(n_toks, 1))])
    ax.set_ylim(0, top * 1.3)
    ax.legend(fontsize=_SMALL, loc="upper center", ncol=3)
    pct = stats["doc_length"]
    title = ""
    if pct["count"]:
        title = (
            f"Document lengths: median {pct['p50']:,.0f}, mean {pct['mean']:,.0f}, "
            f"p90 {pct['p90']:,.0f}, max {pct['max']:,}"
        )
    _panel(
        ax,
        title,
        "document length (tokens, EOS included; dotted: bucket boundaries)",
        "share per bin (%)",
        grid="y",
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
    tail = stats.get("tail")
    lengths, tokens = [b["L"] for b in buckets], [b["tokens"] for b in buckets]
    if tail:  # --tails pack: the tail rows' targets join their length's bar, told apart here
        share_title += (
            f";\ntail rows of {_fmt_len(tail['L'])}: {tail['targets']:,} targets in the "
            f"{_fmt_len(tail['L'])} bar, {tail['padding']:,} padding positions, "
            f"{100 * (tail['step_share'] or 0):.1f}% of steps"
        )
        if tail["L"] not in lengths:
            lengths, tokens = [tail["L"], *lengths], [0, *tokens]
        tokens[lengths.index(tail["L"])] += tail["targets"]
    share_title += ")"
    _share_bars(ax_share, lengths, tokens, share_title)
    head = _plain(f"{stats['root']} [{stats['split']}]")
    if ctx["dd"] is not None and ratio is not None:
        head += (
            f"\nmean attention context at {_fmt_len(ctx['max_len'])}: DD {ctx['dd']:,.0f}, "
            f"C&C {ctx['cc']:,.0f}, C&C+doc mask {ctx['cc_doc_mask']:,.0f}  "
            f"(attention FLOPs DD/C&C {ratio:.2f}x)"
        )
    fig.suptitle(head, fontsize=_TITLE_SIZE)
    save_png_atomic(fig, path)


def plot_plan(
    step_lengths: np.ndarray,
    bucket_tokens: dict[int, int],
    path: str | Path,
    title: str = "",
    by_tenth: Sequence[float] = (),
) -> None:
    """Sequence length per step (top, log2 y) and token share per bucket (bottom), as PNG.

    ``step_lengths[i]`` is the row length L of step ``i``; ``bucket_tokens`` maps every bucket
    L (empty ones included, they show as 0%) to the tokens the plan draws from it; ``by_tenth``
    (optional) the mean length of each tenth of the steps, drawn as a staircase on the top panel.
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
            ax_steps.plot(x, steps, color=_DOCS_COLOR, drawstyle="steps-mid", lw=0.8, alpha=0.5)
            ax_steps.scatter(x, steps, s=14, color=_DOCS_COLOR, linewidths=0)
        else:
            # Many steps: a line between levels would fill the panel, dots form one band per
            # bucket, and the running mean of log2 L draws the cycles' short-to-long ramps.
            ax_steps.scatter(
                x, steps, s=6, marker=".", color=_DOCS_COLOR, lw=0, label="step length"
            )
            run = np.convolve(np.log2(steps.astype(np.float64)), np.ones(w) / w, mode="valid")
            mean = f"running geometric mean ({w} steps)"
            ax_steps.plot(x[w - 1 :], np.exp2(run), color=_TOKENS_COLOR, lw=1.5, label=mean)
            ax_steps.legend(fontsize=_SMALL, loc="lower right")
        if len(by_tenth):
            edges = np.linspace(0, steps.size, len(by_tenth) + 1)
            ax_steps.stairs(
                by_tenth,
                edges - 0.5,
                baseline=None,
                color="black",
                lw=1.2,
                label="mean length per tenth",
            )
            ax_steps.legend(fontsize=_SMALL, loc="lower right")
        ax_steps.set_xlim(-0.5, steps.size - 0.5)
    else:
        _nothing(ax_steps, "no steps")
    _log2_lengths(ax_steps, "y")
    ticks = sorted(set(lengths) | set(np.unique(steps).tolist()))
    if ticks:
        ax_steps.set_yticks(ticks, [_fmt_len(t) for t in ticks])
        ax_steps.set_ylim(ticks[0] / 1.3, ticks[-1] * 1.3)
    steps_title = f"Sequence length per step ({steps.size:,} steps)"
    _panel(ax_steps, steps_title, "optimizer step", "sequence length L (tokens)")
    _share_bars(
        ax_share,
        lengths,
        [int(bucket_tokens[L]) for L in lengths],
        f"Token share per bucket ({sum(int(v) for v in bucket_tokens.values()):,} tokens)",
    )
    if title:
        fig.suptitle(_plain(title), fontsize=12)
    save_png_atomic(fig, path)


def _smooth(y: np.ndarray, n: int) -> np.ndarray:
    """Trailing mean over ``n`` steps (DD's per-step loss swings with the bucket length)."""
    if n <= 1 or y.size < n:
        return y
    c = np.cumsum(np.r_[0.0, y])
    out = np.empty_like(y)
    out[n - 1 :] = (c[n:] - c[:-n]) / n
    out[: n - 1] = c[1:n] / np.arange(1, n)
    return out


def plot_runs(runs: Sequence[Run], path: str | Path) -> None:
    """Six panels: loss vs tokens, loss vs time, val loss per length, seq length per step,
    loss by position on the longest held-out pieces, val loss vs time; and a column with the
    accuracy per context length of up to two ``ddecomp eval`` tasks when a run has one."""
    tasks = sorted({t for r in runs for t in r.tasks})[:2]  # ddecomp eval: a fourth column
    fig = Figure(figsize=(16 + 5 * bool(tasks), 9), layout="constrained")
    grid = fig.subplots(2, 3 + bool(tasks))
    ax = grid[:, :3]
    for a, task in zip(grid[:, 3] if tasks else [], [*tasks, None, None], strict=False):
        if task is None:
            a.set_axis_off()
            continue
        draw_task(a, task, [(r.name, r.tasks[task]) for r in runs if task in r.tasks])
        _panel(a, f"{task}: accuracy per context length", "context length", "accuracy %", size=10)
        _log2_lengths(a, "x")
        a.legend(fontsize=_SMALL)
    for r in runs:
        loss = r.column("loss")
        sm = _smooth(loss, max(1, len(loss) // 50))
        ax[0, 0].plot(r.column("tokens"), sm, label=r.name)
        ax[0, 1].plot(r.column("elapsed_s"), sm, label=r.name)
        ax[1, 0].plot(r.column("step"), r.column("seq_len"), ".", ms=2, label=r.name)
        if r.evals:
            fe = r.evals[-1]
            Ls = sorted(int(k) for k in fe["val_loss"])
            ax[0, 2].plot(Ls, [fe["val_loss"][str(L)] for L in Ls], "o-", label=r.name)
            pos = fe["position"]
            mid = [max(1.0, (a + b) / 2) for a, b in itertools.pairwise(pos["edges"])]
            ax[1, 1].plot(mid, pos["loss"], "o-", label=r.name)
            when = [e["elapsed_s"] for e in r.evals]
            ax[1, 2].plot(when, [e["val_loss_mean"] for e in r.evals], "o-", label=r.name)
    panels = [
        ("training loss vs tokens", "tokens", "loss (smoothed)"),
        ("training loss vs wall time", "training seconds", "loss (smoothed)"),
        ("validation loss per context length (final)", "context length", "loss"),
        ("sequence length per step", "step", "length"),
        ("loss by token position, longest held-out pieces", "position", "loss"),
        ("validation loss (mean over lengths) vs time", "training seconds", "loss"),
    ]
    for a, (title, x, y) in zip(ax.flat, panels, strict=True):
        _panel(a, title, x, y, size=10)
        if a.get_legend_handles_labels()[0]:  # an empty legend is a matplotlib warning
            a.legend(fontsize=_SMALL)
    if not any(r.evals for r in runs):
        for a in (ax[0, 2], ax[1, 1], ax[1, 2]):
            _nothing(a, "no evaluation: prepare the data\nwith --val-fraction")
    else:
        if runs[0].evals:  # what "time to the baseline's loss" in the table is measured against
            target = float(runs[0].evals[-1]["val_loss_mean"])
            ax[1, 2].axhline(target, color="0.4", ls="--", lw=1)
            ax[1, 2].annotate(
                f"{runs[0].name}'s final {target:.3f}",
                (0.99, target),
                ha="right",
                va="bottom",
                xycoords=("axes fraction", "data"),
                fontsize=_SMALL,
                color="0.3",
            )
    if any(r.evals for r in runs) and all(len(r.evals) < 2 for r in runs):
        # One point per run says nothing about time to a loss; say what would.
        _nothing(ax[1, 2], "one evaluation per run (at its end):\ntrain with --eval-every N")
    ax[0, 0].xaxis.set_major_formatter(EngFormatter())  # 200k, not 200000 running into 300000
    _log2_lengths(ax[0, 2], "x")
    _log2_lengths(ax[1, 1], "x")
    _log2_lengths(ax[1, 0], "y")
    fig.suptitle(_plain(_runs_title(runs)), fontsize=_TITLE_SIZE)
    save_png_atomic(fig, path)


def _runs_title(runs: Sequence[Run]) -> str:
    """What was trained on what: the data, the model and the run length (from the baseline)."""
    base = runs[0]
    data = base.config.get("dataset", {})
    sources = data.get("blend", {}).get("sources", [])
    root = data.get("root") or "blend of " + " + ".join(str(s["source"]) for s in sources)
    train = base.config["train"]
    params = base.config.get("params")
    model = f"{train['size']} GPT" + (f" ({params / 1e6:.2f}M parameters)" if params else "")
    return (
        f"{root or 'data'}: {model}, {int(train['tokens']):,} tokens per run, "
        f"{int(train['tokens_per_step']):,} tokens per step; runs: "
        + ", ".join(f"{r.name} ({r.method})" for r in runs)
    )
