"""Curricula: which bucket lengths a variable-sequence-length epoch favours, and when.

A curriculum assigns *odds* to the buckets of a dataset, one number per bucket from shortest to
longest (the paper's Algorithm 1, docs/method.md section 3). The plan (:mod:`ddecomp.loading.plan`)
realises the odds in one of four seeded ways (its ``mode``): ``release`` (default) weights bucket
i by ``o_i x its batches in the cycle`` as the reference release does, so bucket i drains at a
point of the cycle proportional to ``1 / o_i`` whatever its size; ``odds`` weights it by ``o_i``
alone; ``olmo-layout`` and ``symmetric-layout`` spread each bucket over sub-cycles with the
weights of :func:`layout_weights`. Odds shape the *order* of a plan, never its content: every
curriculum serves the same batches, so none of them biases which rows are trained on, only when.

The registry (k buckets, index ``i = 0`` is the shortest):

=============  ===========================  ==================================================
name           odds for bucket i            effect (speed / bias)
=============  ===========================  ==================================================
natural        none (seeded shuffle)        lengths in proportion to tokens all epoch; no ramp
uniform        1                            a plain random mix under ``release`` (no ramp)
grow-p2        2^(k-1-i)  (32 16 8 4 2 1)   the paper's default: a short-to-long ramp per cycle
grow-linear    k - i      (6 5 4 3 2 1)     a gentler ramp
shrink-p2      2^i        (1 2 4 8 16 32)   long to short (the reverse ramp)
[o_0, ...]     as given                     custom odds, all > 0, one per bucket
=============  ===========================  ==================================================

Cost is the same for all of them: the plan is O(S log S) numpy for S steps (about 0.1 s for a
million steps). The step-time cost of an epoch depends only on the bucket token shares, not on
the curriculum (docs/method.md section 3: cost is linear in the length of each step).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ddecomp.errors import UserError

OddsFn = Callable[[int], np.ndarray]


def _uniform(k: int) -> np.ndarray:
    return np.ones(k, dtype=np.float64)


def _grow_p2(k: int) -> np.ndarray:
    return np.exp2(np.arange(k - 1, -1, -1, dtype=np.float64))


def _grow_linear(k: int) -> np.ndarray:
    return np.arange(k, 0, -1, dtype=np.float64)


def _shrink_p2(k: int) -> np.ndarray:
    return np.exp2(np.arange(k, dtype=np.float64))


# name -> odds for k buckets (None: no odds, a seeded shuffle of all batches).
CURRICULA: dict[str, OddsFn | None] = {
    "natural": None,
    "uniform": _uniform,
    "grow-p2": _grow_p2,
    "grow-linear": _grow_linear,
    "shrink-p2": _shrink_p2,
}


@dataclass(frozen=True)
class Curriculum:
    """A resolved curriculum: a registry ``name`` or custom ``odds`` (shortest to longest).

    Exactly one of the two describes it: ``Curriculum("grow-p2")`` or
    ``Curriculum("custom", odds=(32, 16, 8, 4, 2, 1))``.
    """

    name: str
    odds: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.odds is not None:
            if self.name != "custom":
                raise UserError(f"curriculum {self.name!r} has odds {self.odds}; name it 'custom'")
            if len(self.odds) == 0:
                raise UserError("custom curriculum has no odds; give one number per bucket")
            bad = [o for o in self.odds if not (np.isfinite(o) and o > 0)]
            if bad:
                raise UserError(
                    f"custom curriculum odds {list(self.odds)} contain {bad[0]}: every odd must be "
                    "a finite number > 0 (to leave a bucket out, give it 0 tokens in a mixture)"
                )
        elif self.name not in CURRICULA:
            raise UserError(
                f"unknown curriculum {self.name!r}; use one of {', '.join(CURRICULA)} "
                "or a comma-separated list of odds, shortest bucket first"
            )

    @property
    def is_shuffle(self) -> bool:
        """True for ``natural``: no odds, every batch order equally likely."""
        return self.odds is None and CURRICULA[self.name] is None

    def odds_for(self, k: int) -> np.ndarray:
        """Odds of ``k`` buckets, shortest first (float64, all > 0). Not defined for natural."""
        assert k >= 1
        if self.odds is not None:
            if len(self.odds) != k:
                raise UserError(
                    f"custom curriculum has {len(self.odds)} odds {list(self.odds)} but the "
                    f"dataset has {k} buckets; give one number per bucket, shortest first"
                )
            return np.asarray(self.odds, dtype=np.float64)
        fn = CURRICULA[self.name]
        assert fn is not None, "natural has no odds"
        return fn(k)

    def to_json(self) -> str | list[float]:
        """The form stored in loader state and printed by ``ddecomp plan``."""
        return list(self.odds) if self.odds is not None else self.name

    def describe(self) -> str:
        return ",".join(f"{o:g}" for o in self.odds) if self.odds is not None else self.name


LAYOUTS = ("olmo-layout", "symmetric-layout")


def layout_weights(odds: np.ndarray, kind: str) -> np.ndarray:
    """``[k buckets, k sub-cycles]`` weights of the layout modes (docs/method.md section 3.4).

    Bucket i has odds rank ``r_i`` (0 = largest odds, ties by length) and peaks in sub-cycle
    ``r_i`` with the largest odds ``desc[0]``. Before the peak both kinds rise towards it:
    ``desc[r_i - j]``. After it, ``olmo-layout`` (OLMo-core's) drops to the values the top-ranked
    bucket has there, ``desc[j]`` (third of six under grow-p2: 8 16 32 4 2 1), and
    ``symmetric-layout`` (ddecomp's earlier ``layout``) decays by distance, ``desc[|r_i - j|]``
    (8 16 32 16 8 4).
    """
    k = odds.size
    rank = np.empty(k, np.int64)
    rank[np.lexsort((np.arange(k), -odds))] = np.arange(k)
    desc = np.sort(odds)[::-1]
    j = np.arange(k)[None, :]
    dist = np.abs(rank[:, None] - j)
    if kind == "symmetric-layout":
        return desc[dist]
    assert kind == "olmo-layout", kind
    return np.where(j <= rank[:, None], desc[dist], desc[np.broadcast_to(j, dist.shape)])


def split_ceiling_first(totals: np.ndarray, cycles: int) -> np.ndarray:
    """``[n, cycles]``: each total split over the cycles as OLMo-core's ``divide_into_buckets``
    does, ``ceil(rest / cycles_left)`` cycle after cycle: with ``q, r = divmod(n, c)`` the first
    ``r`` cycles get ``q + 1``, the others ``q`` (exact totals)."""
    t = np.asarray(totals, dtype=np.int64)
    q, r = np.divmod(t, cycles)
    return q[:, None] + (np.arange(cycles)[None, :] < r[:, None])


def round_half_cumulative(totals: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Split integer ``totals[n]`` by ``weights[n, m] >= 0`` into counts ``[n, m]`` by cumulative
    round-half: ``bound_j = floor(total * cum_j / cum_m + 1/2)``, the last bound ``total``.
    Monotone bounds, so counts are >= 0 and every row sums to its total exactly; unlike a
    cumulative floor, the rounding remainder is not pushed to the end."""
    t = np.asarray(totals, dtype=np.int64)
    cum = np.cumsum(np.asarray(weights, dtype=np.float64), axis=1)
    bounds = np.floor(t[:, None] * (cum / cum[:, -1:]) + 0.5).astype(np.int64)
    bounds[:, -1] = t
    counts = np.diff(bounds, axis=1, prepend=0)
    assert (counts >= 0).all()
    assert (counts.sum(axis=1) == t).all()
    return counts


def layout_counts(totals: np.ndarray, weights: np.ndarray, kind: str) -> np.ndarray:
    """Batches per sub-cycle ``[n, k]`` of buckets holding ``totals[n]`` batches in a cycle, with
    the sub-cycle weights ``weights[n, k]`` of :func:`layout_weights` (rows repeated per cycle).

    ``olmo-layout`` rounds as OLMo-core's growth curricula do (docs/method.md section 3.4):
    proportions ``p_j = w_j / sum(w)`` in float64, ``round(p_j * n)`` to nearest (ties to even,
    as Python's ``round``), the shortfall added to the last sub-cycle. Where that hands out more
    than ``n`` batches (OLMo-core's GrowLinear can; it then fails an assertion), the row is
    rounded by :func:`round_half_cumulative` instead, so totals are always exact.
    ``symmetric-layout`` uses :func:`round_half_cumulative` throughout.
    """
    t = np.asarray(totals, dtype=np.int64)
    w = np.asarray(weights, dtype=np.float64)
    exact = round_half_cumulative(t, w)
    if kind == "symmetric-layout":
        return exact
    assert kind == "olmo-layout", kind
    olmo = np.round((w / w.sum(axis=1, keepdims=True)) * t[:, None]).astype(np.int64)
    short = t - olmo.sum(axis=1)
    olmo[:, -1] += np.maximum(short, 0)
    return np.where((short >= 0)[:, None], olmo, exact)


def resolve_curriculum(spec: str | Sequence[float] | Curriculum) -> Curriculum:
    """A registry name, a list of odds, a comma list ``"32,16,8"`` or a :class:`Curriculum`."""
    if isinstance(spec, Curriculum):
        return spec
    if isinstance(spec, str):
        s = spec.strip()
        if "," in s or _is_number(s):
            try:
                odds = tuple(float(x) for x in s.split(","))
            except ValueError:
                raise UserError(
                    f"curriculum {spec!r} is neither a name nor a comma-separated list of numbers"
                ) from None
            return Curriculum("custom", odds=odds)
        return Curriculum(s)
    try:
        odds = tuple(float(x) for x in spec)
    except (TypeError, ValueError):
        raise UserError(f"curriculum {spec!r} is neither a name nor a list of numbers") from None
    return Curriculum("custom", odds=odds)


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True
