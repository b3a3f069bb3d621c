"""Tests of ddecomp.data.stats: exact counts on token-identity fixtures, contexts vs slow
references."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ddecomp
from ddecomp.data.dataset import open_dataset
from ddecomp.data.stats import (
    PERCENTILES,
    cc_context,
    compute_stats,
    dd_context,
    format_stats,
    length_histogram,
    length_summary,
)
from ddecomp.preparing.pipeline import TokensConfig, prepare_tokens
from tests._fixtures import identity_tokens

# ---- slow references: one Python step per target ------------------------------------------------


def ref_cc_context(doc_lengths: list[int], max_len: int, doc_mask: bool) -> tuple[int, int]:
    """Target at input position i sees positions [max(chunk start, doc start), i]."""
    doc_start_of: list[int] = []
    pos = 0
    for n in doc_lengths:
        doc_start_of += [pos] * n
        pos += n
    targets = max(pos - 1, 0)
    pairs = 0
    for i in range(targets):
        first = (i // max_len) * max_len
        if doc_mask:
            first = max(first, doc_start_of[i])
        pairs += i - first + 1
    return pairs, targets


def ref_dd_context(bucket_rows: dict[int, int]) -> tuple[int, int]:
    pairs = targets = 0
    for L, n in bucket_rows.items():
        for _ in range(n):
            for i in range(L):
                pairs += i + 1
                targets += 1
    return pairs, targets


# ---- pure functions ------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.integers(1, 300), min_size=0, max_size=25),
    st.sampled_from([1, 2, 4, 16, 64, 128]),
    st.booleans(),
)
def test_cc_context_matches_reference(lengths: list[int], max_len: int, doc_mask: bool) -> None:
    got = cc_context(np.array(lengths, dtype=np.int64), max_len, doc_mask=doc_mask)
    assert got == ref_cc_context(lengths, max_len, doc_mask)


def test_cc_context_hand_computed() -> None:
    # Stream of 10 + 6 = 16 tokens, 15 targets, max 8: chunks of 8 and 7 targets.
    assert cc_context(np.array([10, 6]), 8) == (36 + 28, 15)
    # Doc mask: chunk 0 = positions 0..7 (doc 0), chunk 1 = 8..9 (doc 0) + 10..14 (doc 1).
    assert cc_context(np.array([10, 6]), 8, doc_mask=True) == (36 + 3 + 15, 15)
    # Whole chunks only: exactly (max+1)/2 without masking (4096.5 at 8192).
    pairs, t = cc_context(np.append(np.full(1000, 8192), 1), 8192)
    assert t == 1000 * 8192
    assert pairs / t == 4096.5


def test_cc_context_empty_and_single_token() -> None:
    assert cc_context(np.zeros(0, dtype=np.int64), 8) == (0, 0)
    assert cc_context(np.array([1]), 8, doc_mask=True) == (0, 0)


@given(st.dictionaries(st.sampled_from([1, 2, 4, 8, 16, 32]), st.integers(0, 6)))
def test_dd_context_matches_reference(rows: dict[int, int]) -> None:
    assert dd_context(rows) == ref_dd_context(rows)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 5000), min_size=1, max_size=200))
def test_length_summary_matches_numpy(lengths: list[int]) -> None:
    arr = np.array(lengths, dtype=np.int64)
    s = length_summary(arr)
    assert s["count"] == len(lengths)
    assert s["min"] == min(lengths)
    assert s["max"] == max(lengths)
    assert s["mean"] == pytest.approx(float(np.mean(arr)))
    for p in PERCENTILES:
        assert s[f"p{p}"] == pytest.approx(float(np.percentile(arr, p)))
    json.dumps(s)


def test_length_summary_empty() -> None:
    s = length_summary(np.zeros(0, dtype=np.int64))
    assert s["count"] == 0
    assert s["p50"] is None
    assert s["max"] is None


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 100_000), min_size=1, max_size=200))
def test_length_histogram_counts_every_document(lengths: list[int]) -> None:
    h = length_histogram(np.array(lengths, dtype=np.int64))
    edges = h["edges"]
    assert edges[0] == 1.0
    assert edges[-1] >= max(lengths)
    assert all(a < b for a, b in itertools.pairwise(edges))
    assert sum(h["documents"]) == len(lengths)
    assert sum(h["tokens"]) == sum(lengths)
    # Every 4th edge is an exact power of two, so bucket boundaries are bin edges.
    assert all(e == 2.0**k for k, e in enumerate(edges[::4]))


def test_length_histogram_bins_exact() -> None:
    # Bins per octave 1: edges 1, 2, 4, 8; [1,2) [2,4) [4,8].
    h = length_histogram(np.array([1, 2, 3, 4, 8, 8]), bins_per_octave=1)
    assert h["edges"] == [1.0, 2.0, 4.0, 8.0]
    assert h["documents"] == [1, 2, 3]
    assert h["tokens"] == [1, 5, 20]


# ---- compute_stats on prepared token-identity datasets -------------------------------------------

EOS = 1_000_000  # above every position, so token value = position identifies every token


def prepared(tmp_path: Path, lengths: list[int], **kw: Any) -> Path:
    """The tables below are hand-computed with OLMo-core's ``split`` of long documents (the
    default ``spread`` draws random pieces); a test may still ask for ``spread``."""
    kw.setdefault("long_docs", "split")
    out = tmp_path / "ds"
    prepare_tokens(TokensConfig(identity_tokens(lengths, EOS), out, eos_id=EOS, **kw))
    return out


# min 8, max 64. Targets n-1 in binary, capped at 64, bits below 8 dropped:
#   3 -> short (3 tokens dropped); 9 -> [8]; 65 -> [64]; 100 -> 99 = 64+32 | tail 3;
#   200 -> 199 = 3*64 | tail 7; 17 -> [16].
HAND_LENGTHS = [3, 9, 65, 100, 200, 17]
HAND_ROWS = {8: 1, 16: 1, 32: 1, 64: 5}


def test_compute_stats_hand_computed(tmp_path: Path) -> None:
    ds = open_dataset(prepared(tmp_path, HAND_LENGTHS, min_len=8, max_len=64))
    s = compute_stats(ds)
    json.dumps(s)  # serialisable as is
    assert [b["L"] for b in s["buckets"]] == [8, 16, 32, 64]
    assert {b["L"]: b["rows"] for b in s["buckets"]} == HAND_ROWS
    assert {b["L"]: b["tokens"] for b in s["buckets"]} == {8: 8, 16: 16, 32: 32, 64: 320}
    assert s["kept_targets"] == 376
    assert [b["share"] for b in s["buckets"]] == pytest.approx(
        [8 / 376, 16 / 376, 32 / 376, 320 / 376]
    )
    assert s["num_documents"] == 6
    assert s["num_tokens"] == 394
    reasons = {r["reason"]: r for r in s["dropped"]["reasons"]}
    assert reasons["document_shorter_than_min"]["tokens"] == 3
    assert reasons["document_shorter_than_min"]["documents"] == 1
    assert reasons["tail_below_min"]["tokens"] == 3 + 7
    assert s["dropped"]["tokens"] == 13
    assert s["dropped"]["share"] == pytest.approx(13 / 394)
    assert s["dropped"]["context_only_tokens"] == 5  # first token of the 5 kept documents
    assert s["dropped"]["ingest"] == {}
    # DD: 36 + 136 + 528 + 5 * 2080 pairs over 376 targets.
    assert s["attention_context"]["dd"] == pytest.approx(11100 / 376)
    # C&C 64: 393 targets = 6 full chunks + 9.
    assert s["attention_context"]["cc"] == pytest.approx((6 * 2080 + 45) / 393)
    pairs, t = ref_cc_context(HAND_LENGTHS, 64, doc_mask=True)
    assert s["attention_context"]["cc_doc_mask"] == pytest.approx(pairs / t)
    ratio = s["attention_flop_ratio"]
    assert ratio["dd_vs_cc"] == pytest.approx((11100 / 376) / ((6 * 2080 + 45) / 393))
    assert ratio["dd_vs_cc_doc_mask"] == pytest.approx((11100 / 376) / (pairs / t))
    arr = np.array(HAND_LENGTHS)
    for p in PERCENTILES:
        assert s["doc_length"][f"p{p}"] == pytest.approx(float(np.percentile(arr, p)))
    assert s["doc_length"]["max"] == 200
    assert s["doc_length"]["mean"] == pytest.approx(394 / 6)
    assert sum(s["doc_length_hist"]["documents"]) == 6


def test_compute_stats_includes_empty_buckets(tmp_path: Path) -> None:
    # 9 -> [8], 65 -> [64]: buckets 16 and 32 are empty but listed with 0 rows.
    ds = open_dataset(prepared(tmp_path, [9, 65], min_len=8, max_len=64))
    s = compute_stats(ds)
    rows = [(b["L"], b["rows"], b["tokens"]) for b in s["buckets"]]
    assert rows == [(8, 1, 8), (16, 0, 0), (32, 0, 0), (64, 1, 64)]
    assert s["buckets"][1]["share"] == 0.0
    text = format_stats(s)
    assert "     16            0               0    0.0%" in text


@pytest.mark.parametrize(("seed", "long_docs"), [(0, "split"), (1, "spread"), (2, "split")])
def test_compute_stats_random_corpus_matches_references(
    tmp_path: Path, seed: int, long_docs: str
) -> None:
    """Row counts vs per-document ``decompose``; contexts vs the slow loops; split sums."""
    rng = np.random.default_rng(seed)
    lengths = [int(x) for x in rng.integers(1, 400, size=60)] + [1500]
    out = prepared(
        tmp_path, lengths, min_len=16, max_len=128, long_docs=long_docs, val_fraction=0.3
    )
    per_split = {sp: compute_stats(open_dataset(out, split=sp)) for sp in ("train", "val")}
    assert per_split["train"]["num_documents"] > 0
    assert per_split["val"]["num_documents"] > 0
    assert sum(s["num_documents"] for s in per_split.values()) == len(lengths)
    assert sum(s["num_tokens"] for s in per_split.values()) == sum(lengths)
    for sp, s in per_split.items():
        assert s["long_docs"] == long_docs  # the plot labels what happened above max with it
        ds = open_dataset(out, split=sp)
        starts, ends = ds.document_bounds()
        split_lengths = (ends - starts).tolist()
        targets = sum(sum(ddecomp.decompose(n, 16, 128)) for n in split_lengths)
        assert s["kept_targets"] == targets
        if long_docs == "split":
            want: dict[int, int] = {}
            for n in split_lengths:
                for L in ddecomp.decompose(n, 16, 128):
                    want[L] = want.get(L, 0) + 1
            assert {b["L"]: b["rows"] for b in s["buckets"] if b["rows"]} == want
        rows = {b["L"]: b["rows"] for b in s["buckets"]}
        pairs, t = ref_dd_context(rows)
        assert s["attention_context"]["dd"] == pytest.approx(pairs / t)
        for key, mask in (("cc", False), ("cc_doc_mask", True)):
            pairs, t = ref_cc_context(split_lengths, 128, doc_mask=mask)
            assert s["attention_context"][key] == pytest.approx(pairs / t)
        assert s["dropped"]["tokens"] + s["dropped"]["context_only_tokens"] + targets == sum(
            split_lengths
        )
        assert "mean attention context" in format_stats(s)


def test_compute_stats_empty_split(tmp_path: Path) -> None:
    ds = open_dataset(prepared(tmp_path, HAND_LENGTHS, min_len=8, max_len=64), "val")
    s = compute_stats(ds)
    assert s["num_documents"] == 0
    assert s["kept_targets"] == 0
    assert s["attention_context"]["dd"] is None
    assert s["attention_flop_ratio"]["dd_vs_cc"] is None
    json.dumps(s)
    text = format_stats(s)
    assert "n/a" in text


def test_compute_stats_refuses_inconsistent_manifest(tmp_path: Path) -> None:
    out = prepared(tmp_path, HAND_LENGTHS, min_len=8, max_len=64)
    man = json.loads((out / "manifest.json").read_text())
    man["splits"]["train"]["kept_targets"] += 1
    (out / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(ddecomp.DataError, match="run `ddecomp verify`"):
        compute_stats(open_dataset(out))


def test_format_stats_hand_computed(tmp_path: Path) -> None:
    s = compute_stats(open_dataset(prepared(tmp_path, HAND_LENGTHS, min_len=8, max_len=64)))
    text = format_stats(s)
    assert "       64            5             320   85.1%" in text
    assert "tails below min" in text
    assert "2.54%" in text  # 10 / 394
    assert f"{11100 / 376:,.1f}" in text
    assert f"DD / C&C {(11100 / 376) / (12525 / 393):.3f}x" in text
