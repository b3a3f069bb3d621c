"""Attended (query, key) pairs: what causal attention costs over a set of sequences (pure numpy).

A causal sequence of ``L`` tokens lets its ``i``-th query (from 1) see ``i`` keys, so it attends
``L (L + 1) / 2`` pairs; attention FLOPs are proportional to that count, the other work of a
step to ``L``. Everything that prices attention counts pairs here, so the statistics
(:mod:`ddecomp.data.stats`: the paper's mean attention context, appendix F) and the trainer's FLOP
count (:mod:`ddecomp.training.loop`, :func:`ddecomp.training.model.train_flops`) agree by
construction:

- :func:`causal_pairs`: rows of given lengths (DD's bucket rows, a batch of ``B`` rows of ``L``,
  concat-and-chunk's chunks).
- :func:`doc_mask_pairs`: the same rows under a document mask. A query sees only keys of its own
  document and its own row, so every maximal run of positions inside one row and one document is
  a causal sequence of its own.

Counts are exact integers: per-sequence counts in int64 (lengths stay far below ``2^31``), the
sum in int64 when it provably fits and in Python integers otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

_INT64_MAX = (1 << 63) - 1


def causal_pairs(
    lengths: int | Sequence[int] | np.ndarray, counts: int | Sequence[int] | np.ndarray = 1
) -> int:
    """``sum counts[i] * L_i (L_i + 1) / 2``: pairs of ``counts[i]`` causal rows of ``L_i`` tokens.

    ``lengths`` is one length or many; ``counts`` one count for all, or one per length.
    ``causal_pairs(L, B)`` is a batch of ``B`` rows of ``L``; ``causal_pairs(seqs)`` a list of
    sequences; ``causal_pairs(list(rows), list(rows.values()))`` DD's buckets.
    """
    L = np.asarray(lengths, dtype=np.int64)
    n = np.broadcast_to(np.asarray(counts, dtype=np.int64), L.shape)
    if L.size == 0:
        return 0
    assert int(L.min()) >= 0, "lengths are never negative"
    assert int(n.min()) >= 0, "counts are never negative"
    per = L * (L + 1) // 2
    if int(per.max()) * int(n.sum()) <= _INT64_MAX:
        return int((per * n).sum())
    return sum(int(p) * int(c) for p, c in zip(per.ravel(), n.ravel(), strict=True))


def doc_mask_segments(doc_starts: np.ndarray, row_len: int, total: int) -> np.ndarray:
    """Lengths of the sequences a document mask leaves of ``total`` positions in rows of
    ``row_len``: ``[0, total)`` cut at every multiple of ``row_len`` and at every document start.

    ``doc_starts`` are positions in ``[0, total]`` in any order, duplicates allowed (a loader's
    ``cu_seqlens`` as it is, or the starts of documents in a stream). The last row may be short.
    Merging two sorted arrays is a stable sort of their concatenation (it finds the two runs),
    then duplicates go: ``np.union1d`` is ~400x slower here (3 s for 1.7M documents, numpy 2.4).
    """
    if total <= 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.asarray(doc_starts, dtype=np.int64)
    cuts = np.concatenate(
        [np.arange(0, total, row_len, dtype=np.int64), starts[(starts >= 0) & (starts < total)]]
    )
    cuts.sort(kind="stable")
    cuts = cuts[np.concatenate(([True], cuts[1:] != cuts[:-1]))]
    seqs = np.diff(np.append(cuts, total))
    assert int(seqs.sum()) == total, "the sequences cover every position once"
    assert int(seqs.min()) >= 1, "no empty sequence"
    return seqs


def doc_mask_pairs(doc_starts: np.ndarray, row_len: int, total: int) -> int:
    """Attended pairs of ``total`` positions in rows of ``row_len`` under a document mask
    (:func:`doc_mask_segments`, then :func:`causal_pairs`)."""
    return causal_pairs(doc_mask_segments(doc_starts, row_len, total))
