"""The O(1)-memory row order: a bijection for every n, and a fair shuffle (ddecomp.permutation)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ddecomp.errors import UserError
from ddecomp.permutation import (
    _TABLES,
    ORDER_VERSION,
    Permutation,
    _TableCache,
    check_order,
    permutation,
)

# n from 1 to 10^7: small, primes, powers of two and their neighbours, round numbers
SIZES = [1, 2, 3, 4, 5, 7, 8, 17, 64, 97, 256, 1000, 4093, 4096, 65_537, 10**6, 2**23, 9_999_991]
SIZES += [10**7]


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(min_value=0, max_value=3000),
    key=st.lists(st.integers(min_value=0, max_value=2**63), min_size=1, max_size=5),
)
def test_a_bijection_on_every_small_n(n: int, key: list[int]) -> None:
    got = Permutation(n, tuple(key))(np.arange(n))
    assert got.dtype == np.int64
    assert np.array_equal(np.sort(got), np.arange(n))


@pytest.mark.parametrize("n", [4093, 4096, 65_537, 10**6])
def test_a_bijection_on_larger_n(n: int) -> None:
    got = permutation(n, 3, 1, 4)(np.arange(n))
    assert np.array_equal(np.bincount(got, minlength=n), np.ones(n, np.int64))


def test_pure_in_its_key_and_different_across_keys() -> None:
    a = Permutation(10_000, (1, 2, 3))(np.arange(10_000))
    assert np.array_equal(a, Permutation(10_000, (1, 2, 3))(np.arange(10_000)))
    b = Permutation(10_000, (1, 2, 4))(np.arange(10_000))
    assert (a != b).mean() > 0.99
    # any shape of positions, any order: the map, not a stream
    pos = np.array([[5, 9999], [0, 5]])
    assert np.array_equal(Permutation(10_000, (1, 2, 3))(pos), a[pos])


@pytest.mark.parametrize("n", [n for n in SIZES if n >= 64])
def test_positions_and_rows_are_uncorrelated(n: int) -> None:
    """Pearson correlation of position and row, and of neighbouring rows, on up to 100,000
    positions: |r| stays within 5 standard errors of 0 (and so does a second seed)."""
    m = min(n, 100_000)
    pos = np.random.default_rng(n).choice(n, size=m, replace=False) if n > m else np.arange(n)
    pos = np.sort(pos)
    for seed in (0, 1):
        perm = permutation(n, seed, 0, 256, 0)
        rows = perm(pos).astype(np.float64)
        assert np.unique(rows).size == m  # vacuity: m distinct rows were compared
        bound = 5 / np.sqrt(m)
        assert abs(np.corrcoef(pos, rows)[0, 1]) < bound
        nxt = perm(np.minimum(pos + 1, n - 1)).astype(np.float64)
        assert abs(np.corrcoef(rows, nxt)[0, 1]) < bound + 1 / m


@pytest.mark.parametrize("n", SIZES)
def test_first_rows_are_uniform(n: int) -> None:
    """Over 2,000 keys, the row at position 0 (and at the last position) falls in each of
    min(n, 20) equal bins about equally often: chi-square below its 1e-6 quantile."""
    keys = 2000
    bins = min(n, 20)
    ends = np.array([0, n - 1])
    both = np.stack([Permutation(n, (k, 7))(ends) for k in range(keys)])
    for first in both.T:
        counts = np.bincount(first * bins // n, minlength=bins)
        if bins == 1:
            assert counts[0] == keys
            continue
        # rows per bin: floor-spaced bins hold n // bins or n // bins + 1 rows each
        per_bin = np.diff(-(-np.arange(bins + 1) * n // bins))
        expected = per_bin / n * keys
        chi2 = float(((counts - expected) ** 2 / expected).sum())
        # 1e-6 upper quantiles of chi-square with bins - 1 degrees of freedom (bins <= 20)
        limit = {1: 23.9, 2: 27.6, 3: 30.7, 4: 33.4, 6: 38.3}.get(bins - 1, 56.0)
        assert chi2 < limit, (n, counts.tolist())


def test_position_checks_and_bad_sizes() -> None:
    p = Permutation(10, (0,))
    with pytest.raises(IndexError):
        p(np.array([10]))
    with pytest.raises(IndexError):
        p(np.array([-1]))
    assert p(np.zeros(0, np.int64)).size == 0
    for bad in (-1, 1.5, True, 1 << 62):
        with pytest.raises(ValueError, match="n"):
            Permutation(bad, (0,))  # type: ignore[arg-type]


def test_an_old_or_foreign_order_is_refused_in_one_line() -> None:
    check_order(ORDER_VERSION)
    for bad in (1, 3, "2", None, True):
        with pytest.raises(UserError, match="row order") as e:
            check_order(bad)
        assert "\n" not in str(e.value)


# The order is part of every loader state ("order": 2): these values were computed by the
# network as first released (commit bc07052, pure vectorised walk). A change to the walk, the
# table or the Python path that moved any row would resume runs onto other rows.
_GOLDEN = [
    (7, (0,), [4, 5, 6], [1, 4, 5]),
    (20000, (3, 1, 4), [819, 5395, 6156, 10222, 12739, 17012],
     [12927, 19348, 7924, 1266, 3732, 13025]),
    (65537, (0, 1), [17446, 20432, 21071, 23407, 55400, 56510],
     [18731, 7320, 36447, 35603, 4561, 46520]),
    (300000, (5,), [12292, 80936, 92348, 153340, 191088, 255187],
     [136740, 289104, 63305, 23319, 196138, 182957]),
    (10**12, (2, 7), [16527635528, 40973523936, 269786713763, 636961687321, 813270239200,
     912755577277], [510125997945, 788980069233, 555986769982, 478204483438, 250948554702,
     796549307978]),
]  # fmt: skip


@pytest.mark.parametrize(("n", "key", "pos", "want"), _GOLDEN)
def test_the_released_order_is_kept_on_every_path(
    n: int, key: tuple[int, ...], pos: list[int], want: list[int]
) -> None:
    p = Permutation(n, key)  # a fresh object: its call count starts at 0
    for _ in range(12):  # the walk, then (n <= 2^20) the table once enough was walked
        assert p(np.array(pos)).tolist() == want
        assert [int(p(v)) for v in pos] == want  # one position at a time: the Python walk
    if n <= 1 << 20:  # the table path: the whole bijection, tabulated
        assert p._tabulate()[pos].tolist() == want


def _reference(p: Permutation, pos: np.ndarray) -> np.ndarray:
    """The plain vectorised cycle-walk: every pass through numpy until all land in [0, n)."""
    out = p._network(pos.astype(np.uint64).ravel())
    todo = np.flatnonzero(out >= np.uint64(p.n))
    while todo.size:
        y = p._network(out[todo])
        out[todo] = y
        todo = todo[y >= np.uint64(p.n)]
    return out.astype(np.int64).reshape(pos.shape)


@pytest.mark.parametrize("n", [2, 3, 17, 4097, 20000, 65536, 65537, 300001, 1 << 20, 10**9])
def test_the_fast_paths_equal_the_plain_walk(n: int) -> None:
    """Batches around the Python-walk cut (16), repeated past the table's threshold, and for
    n <= 2^16 every position: the hybrid walk and the table serve the plain walk's values."""
    p = Permutation(n, (n, 11))
    rng = np.random.default_rng(n)
    walked = 0
    for size in (1, 2, 15, 16, 17, 64, 1000):
        for _ in range(3):
            pos = rng.integers(0, n, size)
            want = _reference(p, pos)
            walked += int((want != pos).sum())
            assert np.array_equal(p(pos), want)
            assert np.array_equal(p(pos.reshape(-1, 1)), want.reshape(-1, 1))  # shape kept
    assert walked > 0 or n < 17  # vacuity: the values are not the positions (n = 2 may be)
    if n <= 1 << 20:
        every = np.arange(n)
        assert np.array_equal(p(every), _reference(p, every))
        assert _TABLES.get((n, p.key)) is not None  # the table served these
        assert np.array_equal(p(every[::-1]), _reference(p, every[::-1]))


def test_tables_stay_in_their_budget_and_a_dropped_one_is_rebuilt_only_after_more_walks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two tables of 1 MiB in a 1.5 MiB budget: the older is dropped; asking for it again walks
    (no rebuild on the first call, so two alternating permutations cannot thrash) until n / 16
    positions were walked, then it is tabulated again; values never change."""
    cache = _TableCache(3 << 19)
    monkeypatch.setattr("ddecomp.permutation._TABLES", cache)
    n = 1 << 18  # uint32 tables of 1 MiB
    a, b = Permutation(n, (1,)), Permutation(n, (2,))
    pos = np.arange(0, n, 7)
    want_a, want_b = _reference(a, pos), _reference(b, pos)
    assert np.array_equal(a(pos), want_a)  # n / 7 positions > n / 16: tabulated
    assert cache.get((n, (1,))) is not None
    assert np.array_equal(b(pos), want_b)
    assert cache.get((n, (2,))) is not None
    assert cache.get((n, (1,))) is None  # dropped: the budget holds one
    assert cache.bytes == 4 * n <= cache.budget
    few = pos[:100]
    assert np.array_equal(a(few), want_a[:100])  # walked, not tabulated again yet
    assert cache.get((n, (1,))) is None
    assert np.array_equal(a(pos), want_a)  # now enough walks: tabulated again
    assert cache.get((n, (1,))) is not None


def test_a_child_forked_while_the_table_lock_is_held_can_still_look_up() -> None:
    """The table cache's lock is replaced in a forked child: a fork while another thread held it
    (a loader iterated in a thread while DataLoader workers start) must not deadlock the child."""
    import multiprocessing as mp

    p = permutation(1000, 9, 9)
    want = p(np.arange(1000)).tolist()  # 1000 positions walked: tabulated
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    with _TABLES._lock:  # held by this thread at the fork
        child = ctx.Process(target=lambda: q.put(permutation(1000, 9, 9)(np.arange(1000)).tolist()))
        child.start()
    child.join(30)
    alive = child.is_alive()
    if alive:
        child.kill()
    assert not alive, "the child deadlocked on the inherited lock"
    assert q.get(timeout=5) == want
