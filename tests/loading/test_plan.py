import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ddecomp.errors import UserError
from ddecomp.loading.plan import apportion, build_plan, format_summary

ROWS = {256: 12000, 512: 7000, 1024: 3500, 2048: 1700, 4096: 800, 8192: 400}
TPS = 32768


@given(
    totals=st.lists(st.integers(0, 10**12), min_size=1, max_size=6),
    m=st.integers(1, 40),
    data=st.data(),
)
def test_apportion_is_exact_and_within_one_of_quota(totals, m, data):
    w = np.array([data.draw(st.lists(st.floats(0, 1e6), min_size=m, max_size=m)) for _ in totals])
    w[:, -1] += 1e-3  # every row needs some weight
    counts = apportion(np.array(totals), w)
    assert counts.shape == (len(totals), m)
    assert (counts >= 0).all()
    assert counts.sum(axis=1).tolist() == totals
    quota = np.array(totals, dtype=np.float64)[:, None] * w / w.sum(axis=1, keepdims=True)
    assert (np.abs(counts - quota) <= 1 + 1e-6 * np.maximum(1, quota)).all()


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(st.integers(0, 3000), min_size=1, max_size=6),
    cycles=st.integers(1, 30),
    mult=st.integers(1, 4),
    mode=st.sampled_from(["sample", "layout"]),
    cur=st.sampled_from(["natural", "uniform", "grow-p2", "grow-linear", "shrink-p2"]),
    seed=st.integers(0, 3),
)
def test_plan_serves_every_batch_exactly_once(rows, cycles, mult, mode, cur, seed):
    bucket_rows = {64 << i: n for i, n in enumerate(rows)}
    tps = max(bucket_rows) * mult
    p = build_plan(bucket_rows, tps, cur, cycles, seed, 0, mode=mode)
    total = 0
    for L, n in bucket_rows.items():
        B = tps // L
        sel = p.step_length == L
        assert sel.sum() == n // B
        assert sorted(p.step_batch[sel].tolist()) == list(range(n // B))
        served = np.concatenate(
            [p.global_rows(int(s)) for s in np.flatnonzero(sel)] + [np.zeros(0, np.int64)]
        )
        left = p.left_out_rows(L)
        assert left.size == n % B == p.remainder_rows(L)
        both = np.concatenate([served, left]).astype(np.int64)
        assert np.array_equal(np.sort(both), np.arange(n))
        total += n // B
    assert len(p) == total
    assert set(p.step_cycle.tolist()) <= set(range(cycles))


def test_same_seed_same_plan_other_seed_other_plan():
    a = build_plan(ROWS, TPS, "grow-p2", 8, seed=3, epoch=1)
    b = build_plan(ROWS, TPS, "grow-p2", 8, seed=3, epoch=1)
    c = build_plan(ROWS, TPS, "grow-p2", 8, seed=4, epoch=1)
    d = build_plan(ROWS, TPS, "grow-p2", 8, seed=3, epoch=2)
    assert len(a) > 100
    assert np.array_equal(a.step_length, b.step_length)
    assert np.array_equal(a.global_rows(5), b.global_rows(5))
    assert not np.array_equal(a.step_length, c.step_length)
    assert not np.array_equal(a.step_length, d.step_length)
    assert not np.array_equal(a.order(256), d.order(256))


@pytest.mark.parametrize("mode", ["sample", "layout"])
@pytest.mark.parametrize("cur", ["grow-p2", "grow-linear"])
def test_grow_ramps_short_to_long_in_every_cycle(mode, cur):
    cycles = 8
    p = build_plan(ROWS, TPS, cur, cycles, seed=0, epoch=0, mode=mode)
    assert len(p) > 50 * cycles
    for c in range(cycles):
        lens = p.step_length[p.step_cycle == c]
        if c == 0:
            lens = lens[1:]  # the OOM probe
        tenth = max(1, lens.size // 10)
        assert lens[:tenth].mean() < lens[-tenth:].mean(), (c, lens)
    shrink = build_plan(ROWS, TPS, "shrink-p2", 1, seed=0, epoch=0, mode=mode, oom_probe=False)
    tenth = len(shrink) // 10
    assert shrink.step_length[:tenth].mean() > shrink.step_length[-tenth:].mean()


def test_oom_probe_puts_the_longest_batch_first_without_changing_counts():
    a = build_plan(ROWS, TPS, "grow-p2", 4, 0, 0, oom_probe=True)
    b = build_plan(ROWS, TPS, "grow-p2", 4, 0, 0, oom_probe=False)
    assert a.step_length[0] == 8192
    assert a.step_batch[0] == 0
    assert b.step_length[0] < 8192
    assert np.array_equal(np.sort(a.step_length), np.sort(b.step_length))


def test_natural_is_a_shuffle_in_proportion_to_tokens():
    rows = {256: 64000, 1024: 16000, 4096: 4000}  # equal tokens
    p = build_plan(rows, 4096, "natural", 1, 0, 0, oom_probe=False)
    half = len(p) // 2
    for L in rows:
        assert abs((p.step_length[:half] == L).mean() - 1 / 3) < 0.05


def test_refuses_tokens_per_step_the_max_length_does_not_divide():
    with pytest.raises(
        UserError,
        match=r"not a multiple of max length 8192; use a multiple "
        r"of 8192, e.g. 8192, 16384, 32768",
    ):
        build_plan(ROWS, 10000, "grow-p2")
    with pytest.raises(UserError, match="cycles 0"):
        build_plan(ROWS, TPS, "grow-p2", cycles=0)
    with pytest.raises(UserError, match="mode 'random'"):
        build_plan(ROWS, TPS, "grow-p2", mode="random")
    with pytest.raises(UserError, match="has 2 odds"):
        build_plan(ROWS, TPS, [2, 1])


def test_mixture_equal_upsamples_with_seeded_extra_permutations():
    p = build_plan(ROWS, TPS, "grow-p2", 2, 0, 0, mixture="equal")
    s = p.summary()
    toks = [b["tokens"] for b in s["buckets"]]
    assert max(toks) - min(toks) <= TPS  # equal up to one batch
    b8k = next(b for b in s["buckets"] if b["length"] == 8192)
    assert b8k["repeated_rows"] > 0
    order = p.order(8192)
    assert order.size == p.budget[8192] > ROWS[8192]
    assert np.array_equal(np.sort(order[: ROWS[8192]]), np.arange(ROWS[8192]))
    counts = np.bincount(order, minlength=ROWS[8192])
    assert counts.max() - counts.min() <= 1  # each repeat is a full permutation
    assert "upsampling" in format_summary(s)


def test_mixture_tokens_per_bucket_downsamples_and_reports():
    mix = dict.fromkeys(ROWS, 0)
    mix[256] = 256 * 1000
    p = build_plan(ROWS, TPS, "uniform", 1, 0, 0, mixture=mix)
    assert set(p.step_length.tolist()) == {256}
    s = p.summary()
    assert s["rows_left_out"] == sum(ROWS.values()) - (1000 // 128) * 128
    with pytest.raises(UserError, match="missing"):
        build_plan(ROWS, TPS, mixture={256: 100})


def test_cost_model_reproduces_method_md():
    # DCLM token shares 256..8192 (docs/method.md section 6) -> 0.80x of always-8192 for 160M
    shares = np.array([10.8, 18.2, 22.5, 19.2, 15.7, 13.7])
    lengths = 256 << np.arange(6)
    steps = np.round(shares * 100).astype(int)
    rows = {int(L): int(n * (TPS // L)) for L, n in zip(lengths, steps, strict=True)}
    s = build_plan(rows, TPS, "grow-p2", 1, 0, 0).summary()
    assert s["rows_left_out"] == 0
    assert abs(s["mean_seq_len"] - (steps * lengths).sum() / steps.sum()) < 1e-6
    assert abs(s["relative_step_cost"] - 0.80) < 0.005


def test_empty_buckets_and_tiny_datasets():
    p = build_plan({256: 0, 512: 10, 1024: 0}, 1024, "grow-p2", 3, 0, 0)
    assert len(p) == 5
    assert set(p.step_length.tolist()) == {512}
    empty = build_plan({256: 3}, 1024, "grow-p2", 3, 0, 0)
    assert len(empty) == 0
    assert empty.summary()["rows_left_out"] == 3
