"""A plan's summary as text: the table ``ddecomp plan`` prints and the run logs.

:func:`format_summary` turns :meth:`ddecomp.loading.plan.Plan.summary` (steps, rows and passes per
bucket, mean length per tenth, the predicted cost) into lines; a predicted time under an hour is
given in seconds or minutes, not as ``0.00 h``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def format_summary(s: Mapping[str, Any]) -> str:
    """A plain-text table of :meth:`Plan.summary` for the CLI and logs."""
    scope = s.get("scope", "one pass over the data")
    if s.get("total_tokens") is not None:
        scope += f" of {s['total_tokens']:,} tokens"
    lines = [
        f"{s['steps']:,} steps x {s['tokens_per_step']:,} tokens = {s['tokens']:,} tokens "
        f"({scope}); curriculum {s['curriculum']}, {s['cycles']} cycles, mode {s['mode']}, "
        f"seed {s['seed']}, epoch {s['epoch']}",
        f"{'length':>7} {'rows':>11} {'rows/batch':>10} {'steps':>8} {'share':>6} "
        f"{'passes':>7} {'left out':>9} {'repeated':>9}",
    ]
    for b in s["buckets"]:
        lines.append(
            f"{b['length']:>7} {b['rows']:>11,} {b['rows_per_batch']:>10,} {b['steps']:>8,} "
            f"{100 * b['step_share']:>5.1f}% {b.get('passes', 0.0):>7.3f} "
            f"{b['rows_left_out']:>9,} {b['repeated_rows']:>9,}"
        )
    lines.append(
        f"rows left out: {s['rows_left_out']:,} (rows that do not fill a whole global batch, "
        "beyond a mixture's budget, or past a shorter run's window)"
    )
    tenths = s.get("mean_seq_len_by_tenth") or []
    if tenths:
        lines.append(
            "mean sequence length per tenth of the plan: " + " ".join(f"{x:.0f}" for x in tenths)
        )
    cm = s["cost_model"]
    lines.append(
        f"mean sequence length (token-weighted): {s['mean_seq_len']:.0f}; predicted step cost "
        f"{s['relative_step_cost']:.3f}x of always-{s['max_seq_len']} (cost ~ alpha + beta*L, "
        f"alpha/beta = {cm['alpha_s'] / cm['beta_s_per_len']:,.0f}; {cm['source']})"
    )
    if "predicted_s" in s:
        lines.append(
            f"predicted time at that fit: {_duration(s['predicted_s'])} (160M model, one H100, "
            "scaled by tokens per step; measure yours with --measure)"
        )
    if any(b["repeated_rows"] for b in s["buckets"]):
        lines.append(f"upsampling: {s['upsampling']}")
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    """``4.2 s``, ``3.5 min``, ``12.00 h``: a small run's time is not ``0.00 h``."""
    if seconds < 60:
        return f"{seconds:.2g} s" if seconds < 1 else f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min" if seconds < 3600 else f"{seconds / 3600:,.2f} h"
