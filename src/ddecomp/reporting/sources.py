"""Per-source results of runs on a blend (``ddecomp compare``): a table and a figure.

Runs trained on a :class:`~ddecomp.data.blend.Blend` log, per step, each source's mean training
loss and targets (``source_loss``, ``source_targets`` in ``metrics.jsonl``) and, per evaluation,
held-out loss per source and length (``val_loss_by_source``; :mod:`ddecomp.training.sources`).

:func:`source_rows` gives one row per run and source: the source's share of the run's training
targets, its final training loss (target-weighted mean over the last 10% of steps: a single
step's loss depends on its length and on which sources it drew), and its final held-out loss
(mean over lengths, and at the longest). :func:`plot_sources` draws each source's training loss
over tokens (smoothed, one colour per source, one line style per run) and its final held-out loss
per context length. Runs without per-source metrics are left out (None when none has them).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ddecomp.reporting.compare import Run

_STYLES = ("-", "--", ":", "-.")


def _names(run: Run) -> list[str]:
    return list(run.metrics[0].get("source_targets", {}))


def _series(run: Run, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(tokens, loss or NaN, targets) of ``name`` per step."""
    tokens = run.column("tokens")
    loss = np.array(
        [np.nan if m["source_loss"][name] is None else m["source_loss"][name] for m in run.metrics]
    )
    targets = np.array([m["source_targets"][name] for m in run.metrics], dtype=np.float64)
    return tokens, loss, targets


def source_rows(runs: Sequence[Run]) -> list[dict[str, Any]] | None:
    """One row per run and source (see the module docstring); None if no run has sources."""
    rows = []
    for r in runs:
        names = _names(r)
        all_targets = sum(sum(m["source_targets"].values()) for m in r.metrics) if names else 0
        fe = r.evals[-1] if r.evals else {}
        for name in names:
            _, loss, targets = _series(r, name)
            tail = slice(len(loss) - max(1, len(loss) // 10), None)
            w, lt = targets[tail], np.nan_to_num(loss[tail])
            val = fe.get("val_loss_by_source", {}).get(name, {})
            longest = max((int(L) for L in val), default=None)
            rows.append(
                {
                    "run": r.name,
                    "source": name,
                    "share": float(targets.sum() / all_targets) if all_targets else None,
                    "train_loss": float((w * lt).sum() / w.sum()) if w.sum() else None,
                    "val_loss": float(np.mean(list(val.values()))) if val else None,
                    "val_loss_longest": val[str(longest)] if longest is not None else None,
                    "val_longest": longest,
                }
            )
    return rows or None


def format_source_table(rows: list[dict[str, Any]]) -> str:
    """A plain-text (Markdown) table of :func:`source_rows`."""

    def f(v: Any, spec: str) -> str:
        return "-" if v is None else format(v, spec)

    head = "| run | source | share of targets | train loss | val loss | val @longest |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        at = f" (L={r['val_longest']})" if r["val_longest"] else ""
        lines.append(
            f"| {r['run']} | {r['source']} | {f(r['share'] and 100 * r['share'], '.1f')}% | "
            f"{f(r['train_loss'], '.4f')} | {f(r['val_loss'], '.4f')} | "
            f"{f(r['val_loss_longest'], '.4f')}{at} |"
        )
    return "\n".join(lines)


def plot_sources(runs: Sequence[Run], path: str | Path) -> None:
    """Two panels: each source's training loss over tokens, its held-out loss per length."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import EngFormatter

    from ddecomp.errors import UserError
    from ddecomp.reporting.plots import _log2_lengths, _panel, _plain, _smooth, save_png_atomic

    with_sources = [r for r in runs if _names(r)]
    if not with_sources:
        raise UserError("no run has per-source metrics (train on a blend: ddecomp train DIR DIR)")
    fig = Figure(figsize=(13, 5), layout="constrained")
    ax = fig.subplots(1, 2)
    colors: dict[str, str] = {}
    for i, r in enumerate(with_sources):
        style = _STYLES[i % len(_STYLES)]
        fe = r.evals[-1] if r.evals else {}
        for name in _names(r):
            c = colors.setdefault(name, f"C{len(colors) % 10}")
            tokens, loss, _ = _series(r, name)
            ok = ~np.isnan(loss)
            sm = _smooth(loss[ok], max(1, int(ok.sum()) // 50))
            ax[0].plot(tokens[ok], sm, style, color=c, label=f"{r.name}: {name}")
            val = fe.get("val_loss_by_source", {}).get(name, {})
            if val:
                Ls = sorted(int(k) for k in val)
                ax[1].plot(Ls, [val[str(L)] for L in Ls], "o" + style, color=c, label=name)
    _panel(ax[0], "training loss per source vs tokens", "tokens", "loss (smoothed)", size=10)
    _panel(
        ax[1], "validation loss per source and length (final)", "context length", "loss", size=10
    )
    for a in ax:
        if a.get_legend_handles_labels()[0]:
            a.legend(fontsize=8)
    ax[0].xaxis.set_major_formatter(EngFormatter())
    if ax[1].lines:
        _log2_lengths(ax[1], "x")
    fig.suptitle(_plain("per-source loss: " + ", ".join(r.name for r in with_sources)), fontsize=11)
    save_png_atomic(fig, path)
