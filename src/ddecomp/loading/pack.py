"""``PackedLoader``: best-fit-decreasing packing of document pieces with a document mask.

The paper's ``Pack-8k+DM`` baseline (docs/method.md section 4). A bin is one row of ``seq_len + 1``
tokens (``inputs = row[:-1]``, ``labels = row[1:]``) holding whole pieces back to back:

- pieces: a document of ``n`` tokens with ``n <= seq_len + 1`` is one piece; a longer one is cut
  into pieces of ``seq_len + 1`` tokens starting every ``seq_len`` tokens (one-token overlap, our
  decomposition convention: every target of the document is in exactly one piece) plus a last
  piece holding the remaining targets. The overlap tokens are counted as ``cut_tokens``; a
  one-token document (a lone EOS, no target) is dropped and counted;
- labels: the label of a piece's last token (the next piece's first token, or padding) is
  ``-100``, so only within-document targets are trained; padding inputs are ``eos_id``;
- batches also carry ``cu_seqlens`` (int32, flash-attn varlen layout flattened over rows, with
  padding as a final segment of its row), ``max_seqlen`` and ``position_ids`` (position within
  the piece).

Best-fit decreasing, exact and fast: pieces are sorted by size (descending, ties by document
order) and each goes into the open bin with the least remaining capacity that fits, else a new
bin. Bins are kept in stacks by remaining capacity (``capacity + 1`` stacks, a count array to
find the smallest non-empty capacity >= size with one numpy scan per distinct size). All pieces of
one size are placed together: a bin of remaining capacity ``c`` takes ``c // size`` of them in a
row, exactly what one-at-a-time BFD does (after a placement the same bin is still the best fit).
So the Python work is one step per (bin, size) touch, O(pieces), plus O(capacity) numpy per
distinct size: about 1 s for 100M tokens of web documents at 8192. Bins are packed once
(deterministic) and served in the order of a one-bucket :class:`~ddecomp.loading.plan.Plan`
(a permutation seeded ``(seed, epoch, seq_len)``), cut into rank slices as DD's steps are.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ddecomp.binpack import best_fit_decreasing
from ddecomp.loading.concat import _FixedLengthLoader, segments_to_batch
from ddecomp.loading.protocols import IGNORE_INDEX, DocSegments, DocumentData
from ddecomp.loading.world import WorldSpec


def document_pieces(
    starts: np.ndarray, ends: np.ndarray, seq_len: int
) -> tuple[np.ndarray, np.ndarray]:
    """Global start and token count of every piece (documents in order, pieces in order)."""
    n = ends - starts
    targets = np.maximum(n - 1, 0)
    full = targets // seq_len
    rest = targets - full * seq_len
    count = full + (rest > 0)
    doc = np.repeat(np.arange(n.size), count)
    j = np.arange(int(count.sum()), dtype=np.int64) - np.repeat(np.cumsum(count) - count, count)
    pstart = starts[doc] + j * seq_len
    psize = np.where(j < full[doc], seq_len + 1, rest[doc] + 1)
    return pstart.astype(np.int64), psize.astype(np.int64)


class PackedLoader(_FixedLengthLoader):
    """BFD-packed rows of document pieces with a document mask; see the module docstring.

    Options are keyword-only; ``world`` as for :class:`~ddecomp.loading.vsl.VSLLoader`.
    """

    kind = "pack"

    def __init__(
        self,
        ds: DocumentData,
        *,
        seq_len: int,
        tokens_per_step: int,
        seed: int = 0,
        world: WorldSpec = None,
        layout: str = "rows",
    ) -> None:
        super().__init__(ds, seq_len, tokens_per_step, seed, world, layout)
        starts, ends = ds.document_bounds()
        pstart, psize = document_pieces(starts, ends, self.seq_len)
        bins, nbins = best_fit_decreasing(psize, self.seq_len + 1)
        by_bin = np.lexsort((-psize, bins))  # pieces of a bin together, largest first
        self._pstart, self._psize = pstart[by_bin], psize[by_bin]
        self._ptr = np.searchsorted(bins[by_bin], np.arange(nbins + 1)).astype(np.int64)
        self._nbins = nbins
        doc_tokens = int((ends - starts).sum())
        self.documents = int(starts.size)
        self.pieces = int(psize.size)
        self.single_token_documents = int(np.count_nonzero(ends - starts == 1))
        self.cut_tokens = int(psize.sum()) - doc_tokens + self.single_token_documents
        self.padding_tokens = nbins * (self.seq_len + 1) - int(psize.sum())
        self.trained_targets = int(psize.sum()) - self.pieces
        self._check_nonempty()

    @property
    def num_rows(self) -> int:
        return self._nbins

    def fill(
        self, rows: np.ndarray, buf: np.ndarray
    ) -> tuple[torch.Tensor | None, DocSegments | None]:
        L = self.seq_len
        labels = np.full((rows.size, L), IGNORE_INDEX, dtype=np.int64)
        seg: list[np.ndarray] = []
        for i, b in enumerate(rows.tolist()):
            lo, hi = int(self._ptr[b]), int(self._ptr[b + 1])
            at = 0
            starts = []
            for s, m in zip(self._pstart[lo:hi].tolist(), self._psize[lo:hi].tolist(), strict=True):
                buf[i, at : at + m] = self.ds.tokens(s, s + m)
                labels[i, at : at + m - 1] = buf[i, at + 1 : at + m]
                starts.append(at)
                at += m
            buf[i, at:] = self.ds.eos_id  # padding
            if at < L:
                starts.append(at)  # padding is its own segment
            seg.append(np.asarray(starts[1:], dtype=np.int64))
        return torch.from_numpy(labels), segments_to_batch(seg, L)

    def summary(self) -> dict[str, Any]:
        s = super().summary()
        cap = self.num_rows * (self.seq_len + 1)
        s.update(
            documents=self.documents,
            pieces=self.pieces,
            cut_tokens=self.cut_tokens,
            padding_tokens=self.padding_tokens,
            padding_share=self.padding_tokens / cap if cap else 0.0,
            single_token_documents_dropped=self.single_token_documents,
            trained_targets=self.trained_targets,
        )
        return s
