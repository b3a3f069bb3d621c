"""Serving a dataset at a shorter maximum: rows longer than ``max_len`` split, none dropped.

With the one-token-overlap convention (``docs/method.md`` section 2) a row of bucket ``L`` holds
``L + 1`` tokens and ``L`` targets. At a maximum ``M < L`` it is ``L / M`` valid rows of
``M + 1`` tokens: piece ``p`` is tokens ``[p * M, (p + 1) * M]`` of the row, so neighbouring
pieces share one token (the last input of one is the first of the next; ``L = 2M`` gives two rows
of ``L/2 + 1`` sharing the middle token) and the pieces' targets are the row's, each exactly once.

:func:`rebucket` returns that view of any :class:`~ddecomp.loading.protocols.BucketData` (a
dataset or a blend): buckets below ``M`` unchanged, bucket ``M`` followed by the pieces of every
longer bucket (bucket by bucket, row by row, piece by piece), no bucket above ``M``. The loader's
plan sees only bucket sizes, so its exactly-once proof over rows becomes exactly-once over the
original targets, and ``natural`` odds keep every token's weight. ``train --max-len 4096`` on a
dataset prepared to 8192 trains on all of it.

Cost: a :class:`~ddecomp.data.dataset.Dataset` gathers each piece straight from the token file
(its row start plus ``p * M``); another source (a blend) reads the whole long row of each piece
and keeps the piece, reading up to ``L / M`` times the tokens for those rows. Measured on a
2-core AMD EPYC (2026-12-01), 16 random rows of 4096 + 1 tokens from a 45M-token dataset
prepared to 8192, in tokens/s: a dataset's own 4096 rows 0.7G, its pieces of 8192 rows 0.7G; a
blend's own rows 0.5G, its pieces 0.3G.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import numpy as np

from ddecomp.data.tailrows import PackedRows
from ddecomp.decompose import is_power_of_two
from ddecomp.errors import UserError
from ddecomp.loading.protocols import BucketData, RowSource


class Rebucketed:
    """``ds`` served with at most ``max_len`` tokens per row; see the module docstring."""

    def __init__(self, ds: BucketData, max_len: int) -> None:
        lengths = sorted(ds.bucket_rows)
        if not is_power_of_two(max_len) or not lengths[0] <= max_len <= ds.max_len:
            raise UserError(
                f"max_len {max_len} must be a power of two in the dataset's range "
                f"{lengths[0]}..{ds.max_len}"
            )
        self.ds, self.max_len, self.min_len = ds, int(max_len), lengths[0]
        M = self.max_len
        rows = {L: int(n) for L, n in ds.bucket_rows.items() if L <= M}
        # (length, rows, pieces per row, first virtual row in bucket M) of each longer bucket
        self._long: list[tuple[int, int, int, int]] = []
        for L in lengths:
            n = int(ds.bucket_rows[L])
            if L > M and n:
                self._long.append((L, n, L // M, rows[M]))
                rows[M] += n * (L // M)
        self._own = int(ds.bucket_rows[M])  # bucket M's own rows come first
        self.bucket_rows: dict[int, int] = rows
        self.bucket_lengths: list[int] = [L for L, n in rows.items() if n]
        # tail rows are at most min long, so a shorter maximum never cuts them
        self.packed_lengths = tuple(L for L in ds.packed_lengths if L <= self.max_len)
        tag = f"{ds.fingerprint}:max_len={M}".encode()
        self.fingerprint = ds.fingerprint if M == ds.max_len else hashlib.sha256(tag).hexdigest()

    def __repr__(self) -> str:
        return f"Rebucketed({self.ds!r}, max_len={self.max_len})"

    def pieces(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Virtual rows ``indices`` of bucket ``max_len`` (all past its own rows) as ``(source
        bucket length, source row, piece)``."""
        firsts = np.asarray([f for *_, f in self._long], dtype=np.int64)
        which = np.searchsorted(firsts, indices, side="right") - 1
        assert which.size == 0 or int(which.min()) >= 0
        lens = np.asarray([L for L, *_ in self._long], dtype=np.int64)[which]
        k = np.asarray([k for _, _, k, _ in self._long], dtype=np.int64)[which]
        local = indices - firsts[which]
        return lens, local // k, local % k

    def for_epoch(self, epoch: int) -> _EpochRows:
        return _EpochRows(self, self.ds.for_epoch(epoch))


class _EpochRows:
    """One epoch's rows of a :class:`Rebucketed` view."""

    def __init__(self, view: Rebucketed, src: RowSource) -> None:
        self.view, self.src = view, src

    def rows(
        self, L: int, indices: Sequence[int] | np.ndarray, out: np.ndarray | None = None
    ) -> np.ndarray:
        v, M = self.view, self.view.max_len
        if L not in v.bucket_rows:
            raise KeyError(f"no bucket of length {L}; buckets are {list(v.bucket_rows)}")
        if L != M or not v._long:
            return self.src.rows(L, indices, out=out)
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= v.bucket_rows[M]):
            raise IndexError(f"row index out of range for bucket {M} with {v.bucket_rows[M]} rows")
        if out is None:
            out = np.empty((idx.size, M + 1), dtype=np.int64)
        if out.shape != (idx.size, M + 1):
            raise UserError(f"out has shape {out.shape}, expected {(idx.size, M + 1)}")
        own = idx < v._own
        if own.any():
            out[own] = self.src.rows(M, idx[own], out=np.empty_like(out[own]))
        sel = np.flatnonzero(~own)
        if sel.size:
            lens, rows, piece = v.pieces(idx[sel])
            for Lb in np.unique(lens).tolist():
                m = lens == Lb
                out[sel[m]] = self._pieces(int(Lb), rows[m], piece[m], out.dtype)
        return out

    def fill(
        self, L: int, indices: Sequence[int] | np.ndarray, out: np.ndarray
    ) -> PackedRows | None:
        """As :meth:`~ddecomp.data.dataset.Dataset.fill`. Pieces of longer rows are plain rows;
        packed tail rows can only be the bucket's own rows (a tail length is at most the minimum),
        so those go to the source's ``fill``."""
        v, M = self.view, self.view.max_len
        if L != M or not v._long:
            return self.src.fill(L, indices, out)
        idx = np.asarray(indices, dtype=np.int64)
        own = np.flatnonzero(idx < v._own)
        cut = np.flatnonzero(idx >= v._own)
        packed = None
        if own.size:
            tmp = np.empty((own.size, M + 1), dtype=out.dtype)
            packed = self.src.fill(M, idx[own], tmp)
            out[own] = tmp
        if cut.size:
            out[cut] = self.rows(M, idx[cut], out=np.empty((cut.size, M + 1), dtype=out.dtype))
        if packed is None:
            return None
        labels = out[:, 1:].astype(np.int64)
        labels[own] = packed.labels
        segments = [np.zeros(0, dtype=np.int64)] * idx.size
        for j, i in enumerate(own.tolist()):
            segments[i] = packed.segments[j]
        return PackedRows(labels, segments)

    def _pieces(self, L: int, rows: np.ndarray, piece: np.ndarray, dtype: np.dtype) -> np.ndarray:
        """Pieces ``piece`` (``M + 1`` tokens each) of rows ``rows`` of bucket ``L``."""
        M = self.view.max_len
        buf = np.empty((rows.size, M + 1), dtype=dtype)
        starts_of = getattr(self.src, "row_starts", None)
        if starts_of is not None and hasattr(self.src, "windows"):  # a Dataset: gather pieces
            self.src.windows(starts_of(L)[rows] + piece * M, M + 1, buf)
            return buf
        uniq, inv = np.unique(rows, return_inverse=True)
        whole = self.src.rows(L, uniq, out=np.empty((uniq.size, L + 1), dtype=dtype))
        for i, (r, a) in enumerate(zip(inv.tolist(), (piece * M).tolist(), strict=True)):
            buf[i] = whole[r, a : a + M + 1]  # one contiguous slice copy per piece
        return buf


def rebucket(ds: BucketData, max_len: int) -> BucketData:
    """``ds`` served at ``max_len`` (itself when that is already its maximum)."""
    if max_len == ds.max_len:
        return ds
    view: BucketData = Rebucketed(ds, max_len)
    return view


def total_targets(bucket_rows: Mapping[int, int]) -> int:
    """Targets (= tokens counted once) of a bucket table: ``sum(rows * L)``."""
    return sum(int(n) * int(L) for L, n in bucket_rows.items())
