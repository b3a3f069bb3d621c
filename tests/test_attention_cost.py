"""Attended query-key pairs: one count for the statistics, the trainer's FLOPs and the tests."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from ddecomp.attention_cost import causal_pairs, doc_mask_pairs, doc_mask_segments


def _ref_segments(doc_starts: list[int], row_len: int, total: int) -> list[int]:
    """Position by position: a new sequence starts at a row start or a document start."""
    starts = set(doc_starts)
    out: list[int] = []
    for t in range(total):
        if t % row_len == 0 or t in starts:
            out.append(0)
        out[-1] += 1
    return out


def test_causal_pairs_of_rows_batches_and_buckets() -> None:
    assert causal_pairs(8) == 36
    assert causal_pairs(8, 3) == 3 * 36
    assert causal_pairs([1, 2, 3]) == 1 + 3 + 6
    assert causal_pairs([16, 32], [5, 2]) == 5 * 136 + 2 * 528
    assert causal_pairs([]) == 0
    assert causal_pairs([4, 0], [2, 9]) == 20


def test_causal_pairs_stay_exact_beyond_int64() -> None:
    # 2^40 rows of 2^20 tokens: ~6e23 pairs, far above int64; the count is still exact.
    L, rows = 1 << 20, 1 << 40
    assert causal_pairs(L, rows) == rows * L * (L + 1) // 2
    assert causal_pairs([L, 3], [rows, 1]) == rows * L * (L + 1) // 2 + 6


@settings(max_examples=200, deadline=None)
@given(
    row_len=st.integers(1, 40),
    rows=st.integers(0, 5),
    extra=st.integers(0, 39),
    starts=st.lists(st.integers(0, 240), max_size=30),
)
def test_doc_mask_segments_cut_at_rows_and_documents(
    row_len: int, rows: int, extra: int, starts: list[int]
) -> None:
    total = rows * row_len + extra % row_len  # the last row may be short
    ref = _ref_segments(starts, row_len, total)
    got = doc_mask_segments(np.asarray(starts, dtype=np.int64), row_len, total)
    assert got.tolist() == ref
    assert doc_mask_pairs(np.asarray(starts, dtype=np.int64), row_len, total) == causal_pairs(ref)
    assert sum(ref) == total


def test_one_document_per_row_is_plain_causal_and_more_documents_attend_less() -> None:
    rows = np.arange(0, 4 * 16 + 1, 16)  # cu_seqlens of one document per row, total included
    assert doc_mask_pairs(rows, 16, 64) == causal_pairs(16, 4)
    halves = np.arange(0, 65, 8)
    assert doc_mask_pairs(halves, 16, 64) == causal_pairs(8, 8) < causal_pairs(16, 4)
