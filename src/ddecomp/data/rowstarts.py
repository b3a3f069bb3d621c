"""A bucket's row start offsets: one array in memory, or each shard's file mapped (10^12 tokens).

Every row of bucket ``L`` is one int64 offset into the global token space, 8 bytes per row: about
8.6 GB for a dataset of 10^12 tokens. :func:`load_row_starts` keeps the array in memory, checked
and concatenated once (the fastest lookup: one fancy index per step), up to
:data:`EAGER_ROWS` rows per bucket (2^26, 512 MiB); above it, a bucket is
:class:`ShardedStarts`: each shard's ``.npy`` memory-mapped read-only (its header checked as
before: dtype, shape, size), so opening costs memory per shard, not per row, and the pages are
the page cache's, shared by every rank and worker on a machine. A lookup then finds each row's
shard (one ``searchsorted`` over the shards' cumulative row counts) and reads its offset from that
shard's map; the offsets read are checked inside their shard for the row's length (what opening
checks of every row in memory), so a damaged file is a :class:`DataError` naming it, never a
read of other bytes. Indexing, ``len``, iteration and ``numpy.asarray`` work on both kinds.

Measured on the 2-core development VM (2026-12-03, ``benchmarks/bench_rowstarts.py``, 200M-token
datasets of 32 shards, the mapped kind forced): opening's heap 0.43 MB against 1.5-2.3 MB (the
starts), a grow-p2 epoch at 120-163M tokens/s against 272-445M in memory (the per-shard loop and
the check), above the loader's 100M target; below ``EAGER_ROWS`` nothing changes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from ddecomp.data.files import map_npy, read_npy
from ddecomp.errors import DataError

EAGER_ROWS = 1 << 26  # rows per bucket held in memory (512 MiB); above: each shard's file mapped


class ShardedStarts:
    """Row starts of one bucket kept in their shards' files (see the module docstring)."""

    def __init__(
        self, maps: Sequence[np.ndarray], bases: Sequence[int], limits: Sequence[int],
        paths: Sequence[Path], L: int,
    ) -> None:  # fmt: skip
        self._maps, self._paths, self._L = list(maps), list(paths), int(L)
        self._bases = np.asarray(bases, dtype=np.int64)
        self._limits = np.asarray(limits, dtype=np.int64)  # each shard's token count
        self._cum = np.cumsum([0] + [m.size for m in self._maps], dtype=np.int64)
        self.size = int(self._cum[-1])
        self.dtype = np.dtype(np.int64)
        self.shape = (self.size,)

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, indices: np.ndarray | Sequence[int]) -> np.ndarray:
        """Global starts of rows ``indices`` (int64, the shape of ``indices``)."""
        idx = np.asarray(indices, dtype=np.int64)
        flat = idx.ravel()
        if flat.size and (int(flat.min()) < 0 or int(flat.max()) >= self.size):
            raise IndexError(f"row index out of range for {self.size} rows")
        shard = np.searchsorted(self._cum, flat, side="right") - 1
        out = np.empty(flat.size, dtype=np.int64)
        for k in np.unique(shard).tolist():
            sel = np.flatnonzero(shard == k)
            local = np.asarray(self._maps[k][flat[sel] - self._cum[k]], dtype=np.int64)
            if local.size and (
                int(local.min()) < 0 or int(local.max()) + self._L + 1 > int(self._limits[k])
            ):
                raise DataError(
                    f"{self._paths[k]}: a row lies outside its shard's {int(self._limits[k])} "
                    "tokens; run `ddecomp verify` on the dataset"
                )
            out[sel] = local + self._bases[k]
        return out.reshape(idx.shape)

    def __array__(self, dtype: np.dtype | None = None, copy: bool | None = None) -> np.ndarray:
        """Every start in one array: 8 bytes per row in memory (what this class avoids)."""
        whole = self[np.arange(self.size)]
        return whole if dtype is None else whole.astype(dtype)

    def tolist(self) -> list[int]:
        return np.asarray(self).tolist()

    def __iter__(self) -> Iterator[int]:
        step = 1 << 20
        for lo in range(0, self.size, step):
            yield from self[np.arange(lo, min(self.size, lo + step))].tolist()


def load_row_starts(
    paths: Sequence[Path], rows: Sequence[int], bases: Sequence[int], limits: Sequence[int], L: int
) -> np.ndarray | ShardedStarts:
    """Bucket ``L``'s row starts from the shards' files (``rows`` each, shard ``i``'s tokens from
    ``bases[i]``, ``limits[i]`` of them): in memory up to :data:`EAGER_ROWS`, else mapped."""
    if sum(rows) > EAGER_ROWS:
        maps = [map_npy(p, "int64", n) for p, n in zip(paths, rows, strict=True)]
        return ShardedStarts(maps, bases, limits, paths, L)
    parts = []
    for path, n, base, limit in zip(paths, rows, bases, limits, strict=True):
        starts = read_npy(path, "int64", n)
        if n and (int(starts.min()) < 0 or int(starts.max()) + L + 1 > limit):
            raise DataError(f"{path}: a row lies outside its shard's {limit} tokens")
        parts.append(starts + base)
    out = (np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)).astype(
        np.int64, copy=False
    )
    out.flags.writeable = False
    return out
