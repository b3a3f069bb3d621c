"""Decomposition: the scalar algorithm, the vectorized corpus version, and their agreement."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ddecomp import UserError, decompose, decompose_corpus
from ddecomp.decompose import (
    LONG_DOC_POLICIES,
    bucket_lengths_for,
    check_lengths,
    check_long_docs,
)
from ddecomp.preparing.pipeline import PrepareConfig

POW = st.integers(0, 12).map(lambda k: 1 << k)


def test_paper_example_largest_first() -> None:
    # 2200 targets = 2048 + 128 + 16 + 8 (docs/method.md section 2).
    assert decompose(2201, 8, 2048) == [2048, 128, 16, 8]
    assert decompose(2201, 32, 2048) == [2048, 128]  # 16 + 8 are the dropped tail
    assert decompose(20001, 256, 8192) == [8192, 8192, 2048, 1024, 512]
    assert decompose(1, 1, 8) == []  # a lone EOS has no target
    assert decompose(0, 1, 8) == []


@pytest.mark.parametrize(
    ("lo", "hi", "msg"),
    [(3, 8, "power of two"), (256, 128, "larger than"), (1, 1 << 21, "limit"), (0, 8, "power")],
)
def test_bad_lengths_are_user_errors(lo: int, hi: int, msg: str) -> None:
    with pytest.raises(UserError, match=msg):
        check_lengths(lo, hi)


def test_bucket_lengths_are_the_powers_of_two_from_min_to_max() -> None:
    assert bucket_lengths_for(16, 128) == [16, 32, 64, 128]
    assert bucket_lengths_for(8, 8) == [8]
    assert bucket_lengths_for(1, 4) == [1, 2, 4]
    assert bucket_lengths_for(16, 8) == []  # max below min: none (decompose_corpus asks for this)


def test_one_long_docs_check_serves_the_config_and_the_decomposition() -> None:
    for policy in LONG_DOC_POLICIES:
        check_long_docs(policy)
    with pytest.raises(UserError) as direct:
        check_long_docs("random")
    with pytest.raises(UserError) as config:
        PrepareConfig(out=Path("unused"), long_docs="random")
    one = np.ones(1, dtype=np.int64)
    with pytest.raises(UserError) as corpus:
        decompose_corpus(one * 0, one * 10, 2, 4, "random")
    assert str(direct.value) == str(config.value) == str(corpus.value)
    assert "--long-docs 'random' is not one of split, spread" in str(direct.value)


@settings(max_examples=300, deadline=None)
@given(n=st.integers(0, 200_000), a=POW, b=POW)
def test_pieces_cover_all_but_the_tail(n: int, a: int, b: int) -> None:
    lo, hi = min(a, b), max(a, b)
    pieces = decompose(n, lo, hi)
    m = max(n - 1, 0)
    tail = (m % hi) & (lo - 1)
    assert sum(pieces) == m - tail
    assert all(lo <= p <= hi and p & (p - 1) == 0 for p in pieces)
    assert pieces == sorted(pieces, reverse=True)
    assert len([p for p in pieces if p < hi]) == len({p for p in pieces if p < hi})


def _pieces_by_doc(starts: np.ndarray, dec) -> list[list[tuple[int, int]]]:
    out: list[list[tuple[int, int]]] = [[] for _ in starts]
    for L, rows in dec.buckets.items():
        doc = np.searchsorted(starts, rows, side="right") - 1
        for d, s in zip(doc.tolist(), rows.tolist(), strict=True):
            out[d].append((s, L))
    return [sorted(p) for p in out]


@settings(max_examples=100, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 40_000), min_size=1, max_size=60),
    a=st.integers(2, 8),
    b=st.integers(2, 12),
)
def test_corpus_version_equals_scalar_per_document(lengths: list[int], a: int, b: int) -> None:
    lo, hi = 1 << min(a, b), 1 << max(a, b)
    lens = np.asarray(lengths, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
    dec = decompose_corpus(starts, lens, lo, hi)
    assert list(dec.buckets) == bucket_lengths_for(lo, hi)
    for L, rows in dec.buckets.items():
        assert np.all(np.diff(rows) > 0), f"bucket {L} not in document order"
    per_doc = _pieces_by_doc(starts, dec)
    short = 0
    for s0, n, pieces in zip(starts.tolist(), lengths, per_doc, strict=True):
        assert [L for _, L in pieces] == decompose(n, lo, hi)
        pos = s0  # contiguous from the document start, one token of overlap per boundary
        for s, L in pieces:
            assert s == pos
            pos += L
        short += not pieces
    assert dec.short_documents == short
    kept = sum(int(r.size) * L for L, r in dec.buckets.items())
    assert kept == dec.kept_targets
    assert int(lens.sum()) - lens.size == kept + dec.tail_tokens + (
        dec.short_document_tokens - dec.short_documents
    )


@settings(max_examples=60, deadline=None)
@given(lengths=st.lists(st.integers(1, 200_000), min_size=1, max_size=20), seed=st.integers(0, 9))
def test_spread_keeps_the_same_targets_in_other_pieces(lengths: list[int], seed: int) -> None:
    lens = np.asarray(lengths, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
    split = decompose_corpus(starts, lens, 16, 1024)
    spread = decompose_corpus(starts, lens, 16, 1024, "spread", np.random.default_rng(seed))
    assert spread.kept_targets == split.kept_targets
    assert spread.tail_tokens == split.tail_tokens
    for pieces, n, s0 in zip(_pieces_by_doc(starts, spread), lengths, starts.tolist(), strict=True):
        pos = s0
        for s, L in pieces:
            assert s == pos
            pos += L
        assert pos - s0 == sum(decompose(n, 16, 1024))


def test_spread_fills_every_bucket_from_long_documents_and_is_seeded() -> None:
    lens = np.asarray([2_000_001], dtype=np.int64)
    starts = np.zeros(1, dtype=np.int64)
    a = decompose_corpus(starts, lens, 256, 8192, "spread", np.random.default_rng(1))
    b = decompose_corpus(starts, lens, 256, 8192, "spread", np.random.default_rng(1))
    c = decompose_corpus(starts, lens, 256, 8192, "spread", np.random.default_rng(2))
    tokens = {L: int(r.size) * L for L, r in a.buckets.items()}
    assert all(v > 0 for v in tokens.values())
    # equal expected tokens per bucket: every bucket within a factor 2 of the mean here
    mean = sum(tokens.values()) / len(tokens)
    assert all(0.5 * mean < v < 2 * mean for v in tokens.values()), tokens
    assert all(np.array_equal(a.buckets[L], b.buckets[L]) for L in a.buckets)
    assert any(not np.array_equal(a.buckets[L], c.buckets[L]) for L in a.buckets)


def test_spread_needs_an_rng_and_a_known_policy() -> None:
    one = np.ones(1, dtype=np.int64)
    with pytest.raises(ValueError, match="rng"):
        decompose_corpus(one * 0, one * 10, 2, 4, "spread")
    with pytest.raises(UserError, match="long-docs"):
        decompose_corpus(one * 0, one * 10, 2, 4, "random")


def test_spread_is_the_release_law_piece_by_piece() -> None:
    """The release's ``get_binary(randomize=True)``, in our overlap convention: while at least
    2 x max targets remain, a piece of 2^k targets (min <= 2^k <= max) is drawn with P ~ 2^-k;
    below that the rest is cut greedily (largest power of two first)."""
    lo, hi, n_docs = 4, 32, 20_000
    # 2 x max targets exactly: the first piece is a random draw, the rest (>= max) is greedy
    lens = np.full(n_docs, 2 * hi + 1, dtype=np.int64)
    starts = np.arange(n_docs, dtype=np.int64) * (2 * hi + 1)
    dec = decompose_corpus(starts, lens, lo, hi, "spread", np.random.default_rng(0))
    first = np.zeros(n_docs, dtype=np.int64)
    for L, rows in dec.buckets.items():
        at_start = np.isin(rows, starts)
        first[np.searchsorted(starts, rows[at_start])] = L
    assert (first > 0).all()
    lengths = np.asarray(bucket_lengths_for(lo, hi))
    law = (1.0 / lengths) / (1.0 / lengths).sum()
    seen = np.array([(first == L).sum() for L in lengths]) / n_docs
    sigma = np.sqrt(law * (1 - law) / n_docs)
    assert (np.abs(seen - law) < 5 * sigma).all(), (seen, law)
    # after the draw the rest (2 x max - L targets) is greedy binary, largest first
    for pieces, s0 in zip(_pieces_by_doc(starts, dec), starts.tolist(), strict=True):
        rest = [L for s, L in pieces if s != s0]
        assert rest == decompose(2 * hi + 1 - pieces[0][1], lo, hi)
    # one target fewer than 2 x max: no draw at all, exactly the greedy split
    short = decompose_corpus(starts, lens - 1, lo, hi, "spread", np.random.default_rng(0))
    greedy = decompose_corpus(starts, lens - 1, lo, hi, "split")
    assert all(np.array_equal(short.buckets[L], greedy.buckets[L]) for L in greedy.buckets)
    assert greedy.buckets[hi].size == n_docs  # vacuity guard: the documents were kept


def test_prepare_defaults_to_the_release_spread() -> None:
    assert PrepareConfig(out=Path("unused")).long_docs == "spread"
