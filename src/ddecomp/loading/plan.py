"""The plan: a pure function from bucket sizes to the list of global steps (no I/O).

``build_plan(bucket_rows, tokens_per_step, curriculum, cycles, seed, epoch, total_tokens=...)``
returns a :class:`Plan`: for every global step ``s`` its bucket length ``step_length[s]`` and which
batch of that bucket it takes, ``step_batch[s]`` (the k-th batch of bucket L in this plan). The
rows of that batch are those at positions ``[k*B_L, (k+1)*B_L)``, ``B_L = tokens_per_step // L``,
of a seeded O(1)-memory order (:meth:`Plan.rows_at`); rank ``r`` of ``W`` takes the contiguous
slice ``[r*B_L/W, (r+1)*B_L/W)``. A plan holds 24 bytes per step, nothing per row. Nothing
depends on world size or worker count, so an elastic resume continues the same global order and
the plan is testable without processes.

What a plan covers (:mod:`ddecomp.loading.budget`): with ``total_tokens`` the whole run, as the
reference release plans it: ``total_tokens // tokens_per_step`` steps shared among the buckets by
their token shares, each bucket served in whole passes plus a seeded window of the next one, and
the ``cycles`` spread over the run, so the curriculum and a cosine schedule over the same steps
end together. Without it, one pass over the data (every row once, or a ``mixture``'s budget; the
rows that do not fill a whole global batch are left out and reported); a loader then plans a new
pass per epoch, each with its own ``cycles``.

Order (docs/method.md section 3), all seeded by ``(seed, epoch)``:

- each bucket's batches are split into ``cycles`` parts by exact cumulative rounding
  (``floor(n*(j+1)/c) - floor(n*j/c)``): the parts sum to ``n`` for any ``n`` and ``c``;
- ``mode="release"`` (default; the reference release, OpenLM's ``RandomMix``): within a cycle,
  repeatedly draw a bucket with probability proportional to the fixed weight
  ``o_i x n_ic`` (its odds times its batches in the cycle) among the buckets not yet exhausted.
  Bucket i then drains at a point of the cycle proportional to ``1 / o_i`` whatever its size:
  ``uniform`` is a plain random mix (no ramp, like ``natural``), ``grow-p2`` drains short
  buckets first on any length distribution;
- ``mode="odds"`` (ddecomp's earlier ``sample``, the paper's Algorithm 1 read literally): the
  same draw with weight ``o_i`` alone; it agrees with ``release`` only when all buckets hold equally
  many batches, otherwise large buckets last longest (``uniform`` becomes a hidden ramp).
  Both draws are exact and vectorized as a race of Poisson processes: bucket i emits events at
  rate ``w_i``; the merged order of each bucket's first ``n_ic`` events has exactly the law of
  drawing among the non-empty buckets (memorylessness), so the whole plan is one ``lexsort``;
- ``mode="olmo-layout"`` (OLMo-core's) and ``"symmetric-layout"`` (ddecomp's earlier ``layout``):
  a cycle is cut into k sub-cycles; bucket i's part is spread over them with the weights of
  :func:`~ddecomp.loading.curriculum.layout_weights`, peaking in the sub-cycle of its odds rank,
  and batches are shuffled within a sub-cycle. ``olmo-layout`` splits a bucket over the cycles
  ceiling-first and over the sub-cycles by OLMo-core's rounding, so its per-(cycle, sub-cycle,
  bucket) counts are OLMo-core's wherever OLMo-core's totals come out exact; ``symmetric-layout``
  by cumulative round-half (:func:`~ddecomp.loading.curriculum.layout_counts`; totals exact);
- ``natural`` has no odds: each cycle is a seeded shuffle of its batches, in every mode;
- ``oom_probe`` moves the first batch of the longest bucket to step 0 (nothing added or lost).

The old names ``sample`` and ``layout`` are accepted and stored as ``odds`` and
``symmetric-layout``, so an old loader state resumes the order it was written with.

Cost model (docs/method.md sections 3 and 6): a step of constant tokens costs ``alpha + beta * L``.
The default ``alpha = 0.1910 s``, ``beta = 9.49e-6 s`` per unit of length is the least-squares fit
of the 160M-model row measured on an H100 (65,536 tokens per step, L = 256..8192); with the DCLM
bucket shares it predicts 0.80x of always-8192, as measured. Only the ratio ``alpha / beta``
(about 20,100 tokens) matters for the relative cost the summary reports.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ddecomp.errors import UserError
from ddecomp.loading.budget import MixtureSpec, apportion, budget_rows, run_steps
from ddecomp.loading.curriculum import (
    LAYOUTS,
    Curriculum,
    layout_counts,
    layout_weights,
    resolve_curriculum,
    split_ceiling_first,
)
from ddecomp.permutation import permutation

MODES = ("release", "odds", "olmo-layout", "symmetric-layout")
LEGACY_MODES = {"sample": "odds", "layout": "symmetric-layout"}  # names before the release mode
COST_ALPHA = 0.1910  # s/step, 160M model, H100, 65,536 tokens/step (docs/method.md section 6)
COST_BETA = 9.49e-6  # seconds per step per unit of sequence length, same fit
_ORDER_STREAM = 0  # rng key for the step order; row permutations use the bucket length L >= 1
_BLOCK = 1 << 14  # positions of a bucket's order computed at once (and kept) by rank_rows
_ROW_STREAM = 0x726F7773  # "rows": the row bijections' key ends with it


def resolve_mode(mode: str) -> str:
    """A mode of :data:`MODES` (old names mapped by :data:`LEGACY_MODES`), else a UserError."""
    mode = LEGACY_MODES.get(mode, mode)
    if mode not in MODES:
        raise UserError(f"mode {mode!r} is not one of {', '.join(MODES)}")
    return mode


def check_seed(seed: object) -> int:
    """``seed`` as an int, or a one-line UserError: numpy's SeedSequence takes only non-negative
    integers (a bool or a float would silently become another seed)."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise UserError(f"seed {seed!r} must be an integer >= 0")
    return int(seed)


def check_tokens_per_step(tokens_per_step: int, lengths: Sequence[int], divisor: int = 1) -> None:
    """Refuse a ``tokens_per_step`` that ``max(lengths) * divisor`` does not divide."""
    unit = max(lengths) * divisor
    if not isinstance(tokens_per_step, int | np.integer) or tokens_per_step <= 0:
        raise UserError(f"tokens_per_step {tokens_per_step!r} must be a positive integer")
    if tokens_per_step % unit or any(tokens_per_step % L for L in lengths):
        base = int(np.lcm.reduce([*lengths, unit]))
        lo = max(1, tokens_per_step // base)
        ok = ", ".join(str(base * m) for m in (lo, lo + 1, 2 * lo + 2))
        what = f"max length {max(lengths)}" + (
            f" x world size {divisor} = {unit}" if divisor > 1 else ""
        )
        raise UserError(
            f"tokens_per_step {tokens_per_step} is not a multiple of {what}; "
            f"use a multiple of {base}, e.g. {ok}"
        )


@dataclass(frozen=True, eq=False)
class Plan:
    """One plan's global steps (a run, or one pass); see the module docstring. Build with
    :func:`build_plan`."""

    lengths: tuple[int, ...]  # bucket lengths, shortest first (every key of bucket_rows)
    rows: dict[int, int]  # rows in each bucket
    budget: dict[int, int]  # rows to serve (== rows for one pass without a mixture)
    tokens_per_step: int
    curriculum: Curriculum
    cycles: int
    seed: int
    epoch: int
    mode: str
    oom_probe: bool
    mixture: MixtureSpec
    step_length: np.ndarray  # int64 [S]
    step_batch: np.ndarray  # int64 [S]: the k-th batch of its bucket this epoch
    step_cycle: np.ndarray  # int64 [S]: the cycle the step belongs to
    total_tokens: int | None = None  # the run's tokens; None: the plan is one pass
    _blocks: dict[int, tuple[int, np.ndarray]] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return int(self.step_length.shape[0])

    def rows_per_batch(self, L: int) -> int:
        return self.tokens_per_step // L

    def batches(self, L: int) -> int:
        return self.budget[L] // self.rows_per_batch(L)

    def remainder_rows(self, L: int) -> int:
        """Budget rows of bucket L that do not fill a whole global batch (left out)."""
        return self.budget[L] % self.rows_per_batch(L)

    def rows_at(self, L: int, positions: np.ndarray) -> np.ndarray:
        """Rows of bucket L at serving ``positions`` (int64, each < ``budget[L]``): position
        ``p`` of pass ``j = p // rows[L]`` is row ``perm_j(p % rows[L])``, ``perm_j`` the bijection
        keyed ``(seed, epoch, L, j)`` (:mod:`ddecomp.permutation`); nothing per row is built."""
        pos = np.asarray(positions, dtype=np.int64)
        n = self.rows[L]
        if pos.size and (int(pos.min()) < 0 or int(pos.max()) >= self.budget[L]):
            raise IndexError(f"position out of range for bucket {L}'s {self.budget[L]} rows")
        if not pos.size:
            return pos.copy()
        passes, within = np.divmod(pos, n)
        first, last = int(passes.min()), int(passes.max())
        if first == last:
            return permutation(n, *self._order_key(L, first))(within)
        out = np.empty_like(pos)
        for j in range(first, last + 1):
            sel = passes == j
            if sel.any():
                out[sel] = permutation(n, *self._order_key(L, j))(within[sel])
        return out

    def _order_key(self, L: int, j: int) -> tuple[int, ...]:
        return (self.seed, self.epoch, L, j, _ROW_STREAM)

    def order(self, L: int) -> np.ndarray:
        """Every row index of bucket L in serving order: ``budget[L]`` of them (int64).

        O(budget) memory: for tests and inspection; loaders call :meth:`rows_at` per step.
        """
        return self.rows_at(L, np.arange(self.budget[L], dtype=np.int64))

    def passes(self, L: int) -> float:
        """Served rows of bucket L over its rows: 0.1 sub-samples it, 3.5 repeats it."""
        return self.batches(L) * self.rows_per_batch(L) / self.rows[L] if self.rows[L] else 0.0

    def length_by_part(self, parts: int = 10) -> np.ndarray:
        """Mean sequence length of each of ``parts`` equal stretches of the steps (float64;
        token-weighted, as every step holds the same tokens). Empty when the plan is."""
        if not len(self):
            return np.zeros(0)
        return np.array([c.mean() for c in np.array_split(self.step_length, parts) if c.size])

    def global_rows(self, step: int) -> np.ndarray:
        """Row indices (of bucket ``step_length[step]``) of the whole global batch of a step."""
        return self.rank_rows(step, 0, 1)

    def rank_rows(self, step: int, rank: int, world_size: int) -> np.ndarray:
        """Rank ``rank``'s contiguous slice of a step's global batch."""
        L = int(self.step_length[step])
        B = self.rows_per_batch(L)
        assert B % world_size == 0, (B, world_size)
        per = B // world_size
        lo = int(self.step_batch[step]) * B + rank * per
        parts, hi = [], lo + per
        while lo < hi:  # through blocks of the order: one network call per _BLOCK positions
            b = lo // _BLOCK
            rows = self._block(L, b)
            take = rows[lo - b * _BLOCK : hi - b * _BLOCK]
            parts.append(take)
            lo += take.size
        return parts[0].copy() if len(parts) == 1 else np.concatenate(parts)

    def _block(self, L: int, b: int) -> np.ndarray:
        """Rows at positions ``[b, b + 1) * _BLOCK`` of bucket L, the last one kept per bucket."""
        got = self._blocks.get(L)
        if got is None or got[0] != b:
            lo = b * _BLOCK
            pos = np.arange(lo, min(lo + _BLOCK, self.budget[L]), dtype=np.int64)
            got = self._blocks[L] = (b, self.rows_at(L, pos))
        return got[1]

    def left_out_rows(self, L: int) -> np.ndarray:
        """Rows of bucket L not served this epoch, ascending: pass 0's positions past the
        served ones (O(rows left out))."""
        served, n = self.batches(L) * self.rows_per_batch(L), self.rows[L]
        if served >= n:
            return np.zeros(0, dtype=np.int64)
        return np.sort(permutation(n, *self._order_key(L, 0))(np.arange(served, n)))

    def summary(self, alpha: float = COST_ALPHA, beta: float = COST_BETA) -> dict[str, Any]:
        """Steps per bucket, rows left out, mean length and predicted relative step cost (JSON)."""
        S = len(self)
        uniq, cnt = np.unique(self.step_length, return_counts=True)
        counts = {int(L): int(c) for L, c in zip(uniq, cnt, strict=True)}
        buckets = []
        for L in self.lengths:
            B, nb = self.rows_per_batch(L), self.batches(L)
            served = nb * B
            buckets.append(
                {
                    "length": L,
                    "rows": self.rows[L],
                    "budget_rows": self.budget[L],
                    "rows_per_batch": B,
                    "steps": counts.get(L, 0),
                    "step_share": counts.get(L, 0) / S if S else 0.0,
                    "tokens": served * L,
                    "remainder_rows": self.remainder_rows(L),
                    "rows_left_out": self.rows[L] - min(self.rows[L], served),
                    "repeated_rows": max(0, served - self.rows[L]),
                }
            )
        lmax = max(self.lengths)
        mean_len = float(self.step_length.mean()) if S else 0.0
        rel = (alpha + beta * mean_len) / (alpha + beta * lmax) if S else 0.0
        for b in buckets:
            b["passes"] = self.passes(int(b["length"]))
        # seconds at the fit (measured at 65,536 tokens per step; a step's cost scales with its
        # tokens at constant L): a rough wall-clock forecast for a 160M model on one H100
        scale = self.tokens_per_step / 65536
        return {
            "steps": S,
            "total_tokens": self.total_tokens,
            "scope": "one pass over the data" if self.total_tokens is None else "the run",
            "tokens_per_step": self.tokens_per_step,
            "tokens": S * self.tokens_per_step,
            "curriculum": self.curriculum.to_json(),
            "cycles": self.cycles,
            "mode": self.mode,
            "seed": self.seed,
            "epoch": self.epoch,
            "oom_probe": self.oom_probe,
            "mixture": self.mixture if isinstance(self.mixture, str | None) else dict(self.mixture),
            "upsampling": "rows beyond a bucket's size repeat it in further seeded permutations "
            "(every row is served before any repeats)",
            "buckets": buckets,
            "rows_left_out": sum(b["rows_left_out"] for b in buckets),
            "mean_seq_len": mean_len,
            "max_seq_len": lmax,
            "relative_step_cost": rel,
            "mean_seq_len_by_tenth": self.length_by_part(10).tolist(),
            "predicted_s": scale * float(S * alpha + beta * self.step_length.sum()),
            "cost_model": {
                "alpha_s": alpha,
                "beta_s_per_len": beta,
                "source": "docs/method.md section 6: 160M, H100, 65,536 tokens/step, linear fit",
            },
        }


def build_plan(
    bucket_rows: Mapping[int, int],
    tokens_per_step: int,
    curriculum: str | Sequence[float] | Curriculum = "grow-p2",
    cycles: int = 8,
    seed: int = 0,
    epoch: int = 0,
    mode: str = "release",
    oom_probe: bool = True,
    mixture: MixtureSpec = None,
    total_tokens: int | None = None,
) -> Plan:
    """The plan of the run of ``total_tokens`` (None: of one pass over the data); a pure
    function of its arguments (see the module docstring)."""
    rows = {int(L): int(n) for L, n in sorted(bucket_rows.items())}
    if not rows or any(L <= 0 or n < 0 for L, n in rows.items()):
        raise UserError(f"bucket_rows {rows} must map lengths > 0 to row counts >= 0")
    lengths = tuple(rows)
    check_tokens_per_step(tokens_per_step, lengths)
    cur = resolve_curriculum(curriculum)
    if not isinstance(cycles, int | np.integer) or cycles < 1:
        raise UserError(f"cycles {cycles!r} must be an integer >= 1")
    mode = resolve_mode(mode)
    budget = budget_rows(rows, mixture)
    per_batch = np.array([tokens_per_step // L for L in lengths], dtype=np.int64)
    if total_tokens is None:
        nb = np.array([budget[L] for L in lengths], dtype=np.int64) // per_batch
    else:  # the run: steps shared by token shares, served as passes plus a window
        nb = run_steps(budget, lengths, tokens_per_step, total_tokens)
        budget = {L: int(n * B) for L, n, B in zip(lengths, nb, per_batch, strict=True)}
    k = len(lengths)
    odds = None if cur.is_shuffle else cur.odds_for(k)
    # [k, cycles]: bucket i's batches in cycle c (exact split)
    if mode == "olmo-layout" and odds is not None:  # OLMo-core's divide_into_buckets
        parts = split_ceiling_first(nb, int(cycles))
    else:
        parts = apportion(nb, np.ones((k, int(cycles))))
    rng = np.random.default_rng([seed, epoch, _ORDER_STREAM])
    label = np.repeat(np.repeat(np.arange(k), cycles), parts.ravel())  # bucket per batch
    cyc = np.repeat(np.tile(np.arange(cycles), k), parts.ravel())
    if odds is None:  # natural: a seeded shuffle within each cycle
        order = np.lexsort((rng.random(label.size), cyc))
    elif mode in LAYOUTS:  # k sub-cycles per cycle, bucket i peaks in the sub-cycle of its rank
        w = layout_weights(odds, mode)  # [k buckets, k sub-cycles]
        sub_counts = layout_counts(parts.ravel(), np.repeat(w, cycles, axis=0), mode)  # [(i,c),j]
        sub = np.repeat(np.tile(np.arange(k), k * int(cycles)), sub_counts.ravel())
        order = np.lexsort((rng.random(label.size), sub, cyc))
    else:  # Poisson race: segmented cumsum of Exp(1) / rate per (bucket, cycle)
        # release: rate o_i x n_ic (fixed over the cycle, as RandomMix's weights); odds: o_i
        rate = odds[label] * (parts[label, cyc] if mode == "release" else 1)
        t = np.cumsum(rng.standard_exponential(label.size) / rate)
        seg_start = np.flatnonzero(np.r_[True, (label[1:] != label[:-1]) | (cyc[1:] != cyc[:-1])])
        seg_len = np.diff(np.r_[seg_start, label.size])
        before = np.r_[0.0, t][seg_start]  # cumsum just before each segment
        t = t - np.repeat(before, seg_len)
        order = np.lexsort((t, cyc))
    step_label = label[order]
    step_cycle = cyc[order]
    if oom_probe and step_label.size:
        longest = int(step_label.max())
        first = int(np.argmax(step_label == longest))
        move = np.r_[first, np.arange(first), np.arange(first + 1, step_label.size)]
        step_label, step_cycle = step_label[move], step_cycle[move]
    # the k-th occurrence of a bucket takes its k-th batch
    by_bucket = np.argsort(step_label, kind="stable")
    starts = np.r_[0, np.cumsum(nb)[:-1]]
    step_batch = np.empty(step_label.size, np.int64)
    step_batch[by_bucket] = np.arange(step_label.size) - np.repeat(starts, nb)
    return Plan(
        lengths=lengths,
        rows=rows,
        budget=budget,
        tokens_per_step=int(tokens_per_step),
        curriculum=cur,
        cycles=int(cycles),
        seed=int(seed),
        epoch=int(epoch),
        mode=mode,
        oom_probe=bool(oom_probe),
        mixture=mixture,
        step_length=np.asarray(lengths, dtype=np.int64)[step_label],
        step_batch=step_batch,
        step_cycle=step_cycle.astype(np.int64),
        total_tokens=None if total_tokens is None else int(total_tokens),
    )
