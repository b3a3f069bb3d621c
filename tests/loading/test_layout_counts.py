"""The layout modes' batch counts per (cycle, sub-cycle, bucket).

``olmo-layout`` must reproduce OLMo-core's growth curricula to the batch wherever OLMo-core's own
totals come out exact. The reference below is OLMo-core's arithmetic restated in plain loops (read
from ``olmo_core/data/numpy_dataset.py``, ``VSLGrowthCurriculum``, and ``divide_into_buckets`` in
``olmo_core/data/utils.py``, 2026-12-02), not its code: a bucket's batches are dealt to the cycles
largest share first; in a cycle, sub-cycle j of k gets ``round(p_j * n)`` with Python's rounding,
``p_j`` the bucket's sub-cycle odds over their sum, and whatever that leaves short goes to the last
sub-cycle.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ddecomp.loading.curriculum import layout_counts, layout_weights, round_half_cumulative
from ddecomp.loading.plan import build_plan


def _olmo_subcycle_odds(i: int, k: int, p2: bool) -> list[int]:
    """Bucket i (0 = shortest) of k: its odds rises to the top value in sub-cycle i, after which
    it takes the value the shortest bucket has there (k - j)."""
    out = []
    for j in range(k):
        level = k - i + j if j <= i else k - j
        out.append(2 ** (level - 1) if p2 else level)
    return out


def _olmo_counts(batches: list[int], cycles: int, p2: bool) -> np.ndarray | None:
    """``[cycle, sub-cycle, bucket]`` counts as OLMo-core computes them; None if it overshoots."""
    k = len(batches)
    out = np.zeros((cycles, k, k), dtype=np.int64)
    for i, n in enumerate(batches):
        per_cycle, rest = [], n
        for left in range(cycles, 0, -1):  # largest share first
            per_cycle.append(math.ceil(rest / left))
            rest -= per_cycle[-1]
        odds = _olmo_subcycle_odds(i, k, p2)
        for c, m in enumerate(per_cycle):
            got = [round(o / sum(odds) * m) for o in odds]
            if sum(got) > m:
                return None
            got[-1] += m - sum(got)
            out[c, :, i] = got
    return out


def _plan_counts(
    batches: list[int], cycles: int, curriculum: str, mode: str, sizes: np.ndarray
) -> np.ndarray:
    """The same counts read off a plan: cycle c's steps in order, cut at the sub-cycle sizes
    ``sizes[c, j]`` (so a wrong composition of any sub-cycle shows)."""
    k = len(batches)
    lengths = [256 << i for i in range(k)]
    tps = lengths[-1]
    rows = {L: n * (tps // L) for L, n in zip(lengths, batches, strict=True)}
    plan = build_plan(rows, tps, curriculum, cycles, seed=3, mode=mode, oom_probe=False)
    out = np.zeros((cycles, k, k), dtype=np.int64)
    for c in range(cycles):
        steps = plan.step_length[plan.step_cycle == c]
        assert steps.size == sizes[c].sum()
        for j, seg in enumerate(np.split(steps, np.cumsum(sizes[c])[:-1])):
            out[c, j] = [int((seg == L).sum()) for L in lengths]
    return out


VECTORS = [
    ([8, 16, 32, 56, 88, 280], 8),  # the default corpus at 16,384 tokens per step (issue 20)
    ([1, 2, 3, 5, 8, 13], 8),
    ([7, 30, 11, 2, 95, 400], 3),
    ([100, 3, 17, 64, 9, 1], 5),
    ([13, 21, 34], 2),
    ([5, 500, 50, 5000], 7),
    ([9, 9, 9, 9, 9, 9, 9, 9], 4),
]


@pytest.mark.parametrize(("batches", "cycles"), VECTORS)
def test_olmo_layout_is_olmo_cores_grow_p2_to_the_batch(batches: list[int], cycles: int) -> None:
    want = _olmo_counts(batches, cycles, p2=True)
    assert want is not None  # GrowP2's totals come out exact
    got = _plan_counts(batches, cycles, "grow-p2", "olmo-layout", want.sum(axis=2))
    assert np.array_equal(got, want)
    assert got.sum() == sum(batches) > 0  # vacuity guard: every batch was placed
    if batches[0] == 8 and cycles == 8:  # issue 20: the first sub-cycle of cycle 0 has a batch
        assert got[0, 0].sum() > 0
        assert got[0, 0, 0] == 1


def test_olmo_layout_matches_grow_linear_where_olmo_core_is_exact_and_stays_exact_elsewhere() -> (
    None
):
    exact = over = 0
    w = layout_weights(np.arange(4, 0, -1.0), "olmo-layout")
    for n in range(1, 300):
        batches = [n, n + 1, 2 * n, 7]
        want = _olmo_counts(batches, 1, p2=False)
        ours = layout_counts(np.array(batches), w, "olmo-layout")  # [bucket, sub-cycle]
        got = _plan_counts(batches, 1, "grow-linear", "olmo-layout", ours.sum(axis=0)[None])
        assert np.array_equal(got[0], ours.T)
        assert got.sum(axis=(0, 1)).tolist() == batches
        if want is None:
            over += 1
        else:
            exact += 1
            assert np.array_equal(got, want)
    assert exact > 0
    assert over > 0


@settings(max_examples=200, deadline=None)
@given(
    totals=st.lists(st.integers(0, 10**6), min_size=1, max_size=8),
    k=st.integers(1, 8),
    kind=st.sampled_from(["olmo-layout", "symmetric-layout"]),
    linear=st.booleans(),
)
def test_layout_totals_are_exact_for_every_n(
    totals: list[int], k: int, kind: str, linear: bool
) -> None:
    odds = np.arange(k, 0, -1.0) if linear else np.exp2(np.arange(k - 1, -1, -1.0))
    w = layout_weights(odds, kind)
    rows = np.resize(np.arange(k), len(totals))
    got = layout_counts(np.array(totals), w[rows], kind)
    assert (got >= 0).all()
    assert got.sum(axis=1).tolist() == totals


def test_symmetric_layout_rounds_half_not_to_the_end() -> None:
    # one batch of the shortest bucket per cycle, weights 32 16 8 4 2 1: the cumulative floor put
    # it in the last sub-cycle; round-half puts it where half the weight is reached, the first
    w = layout_weights(np.exp2(np.arange(5, -1, -1.0)), "symmetric-layout")
    assert layout_counts(np.array([1]), w[:1], "symmetric-layout").tolist() == [[1, 0, 0, 0, 0, 0]]
    got = round_half_cumulative(np.array([10, 3]), np.array([[1.0, 1, 1, 1], [1.0, 1, 1, 1]]))
    assert got.tolist() == [[3, 2, 3, 2], [1, 1, 0, 1]]
