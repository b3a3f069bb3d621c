"""Budgets: how many rows of each bucket a plan serves (pure numpy, no I/O).

Two scopes (docs/method.md section 3.5):

- one pass (``total_tokens=None``): every row once, or a ``mixture``'s tokens per bucket;
- the run (``total_tokens=T``), as the reference release's ``get_dd_params.py`` plans it: the run
  has ``S = T // tokens_per_step`` steps and bucket L gets ``n_L`` of them, the cumulative
  rounding of ``S x share_L`` where ``share_L`` is the bucket's token share (natural, the
  mixture's, or a blend's: a :class:`~ddecomp.data.blend.Blend`'s bucket rows already carry its
  weights). Each ``n_L`` is within one step of its exact quota and they sum to ``S``, so every
  bucket's share of the run's tokens is within one global batch of its target. ``n_L x B_L``
  rows are served: whole passes over the bucket plus a seeded window of the next pass
  (:meth:`ddecomp.loading.plan.Plan.rows_at`): more rows than the bucket holds repeat it (a run
  longer than the data), fewer sub-sample it (a shorter run), every bucket keeping its share.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ddecomp.errors import UserError

MixtureSpec = Mapping[int, int] | str | None


def apportion(totals: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Split integer ``totals[n]`` by ``weights[n, m] >= 0`` into integer counts ``[n, m]``.

    Cumulative rounding: ``bound_j = floor(total * cum_j / cum_m)`` with the last bound set to
    ``total``. Bounds are monotone, so counts are >= 0, each within 1 of its exact quota, and every
    row sums to its total exactly: nothing is lost or invented by rounding.
    """
    totals = np.asarray(totals, dtype=np.int64)
    w = np.asarray(weights, dtype=np.float64)
    assert w.ndim == 2
    assert w.shape[0] == totals.shape[0]
    assert (w >= 0).all()
    assert (w.sum(axis=1) > 0).all(), "every row needs a positive weight"
    cum = np.cumsum(w, axis=1)
    frac = cum / cum[:, -1:]
    bounds = np.floor(totals[:, None] * frac).astype(np.int64)
    bounds[:, -1] = totals
    counts = np.diff(bounds, axis=1, prepend=0)
    assert (counts >= 0).all()
    assert (counts.sum(axis=1) == totals).all()
    return counts


def budget_rows(rows: dict[int, int], mixture: MixtureSpec) -> dict[int, int]:
    """Rows to serve per bucket in one pass: all of them, or ``tokens // L`` from a mixture."""
    if mixture is None or mixture == "natural":
        return dict(rows)
    if mixture == "equal":
        nonempty = [L for L, n in rows.items() if n > 0]
        total = sum(rows[L] * L for L in nonempty)
        share = total // max(1, len(nonempty))
        return {L: (share // L if rows[L] > 0 else 0) for L in rows}
    if isinstance(mixture, str):
        raise UserError(f"mixture {mixture!r} is not 'natural', 'equal' or tokens per bucket")
    unknown = sorted(set(mixture) - set(rows))
    missing = sorted(L for L in rows if rows[L] > 0 and L not in mixture)
    if unknown or missing:
        raise UserError(
            f"mixture keys {sorted(mixture)} do not match the buckets {sorted(rows)}"
            + (f": unknown {unknown}" if unknown else "")
            + (f": missing {missing} (give 0 to leave a bucket out)" if missing else "")
        )
    out = {}
    for L in rows:
        t = int(mixture.get(L, 0))
        if t < 0:
            raise UserError(f"mixture gives bucket {L} {t} tokens; tokens must be >= 0")
        if t > 0 and rows[L] == 0:
            raise UserError(f"mixture gives bucket {L} {t} tokens but it has no rows")
        out[L] = t // L
    return out


def run_steps(
    budget: Mapping[int, int], lengths: Sequence[int], tokens_per_step: int, total_tokens: int
) -> np.ndarray:
    """Steps per bucket (int64, ``lengths`` order) of a run of ``total_tokens``: the cumulative
    rounding of ``total_tokens // tokens_per_step`` by the buckets' token shares in ``budget``."""
    if isinstance(total_tokens, bool) or not isinstance(total_tokens, int | np.integer):
        raise UserError(f"total_tokens {total_tokens!r} must be an integer (tokens of the run)")
    if total_tokens < tokens_per_step:
        raise UserError(
            f"total_tokens {total_tokens:,} is less than one step of {tokens_per_step:,} tokens; "
            "raise total_tokens or lower tokens_per_step"
        )
    tokens = np.array([budget[L] * L for L in lengths], dtype=np.float64)
    if tokens.sum() <= 0:
        raise UserError("the data has no rows to plan a run from (every bucket is empty)")
    steps = int(total_tokens) // tokens_per_step
    return apportion(np.array([steps]), tokens[None, :])[0]
