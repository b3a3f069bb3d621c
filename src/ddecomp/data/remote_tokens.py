"""``RemoteTokens``: the token bytes of a dataset in object storage, as a Dataset reads them.

A :class:`~ddecomp.data.dataset.Dataset` opened from a URL keeps everything but its tokens as a
local one does (manifest, bucket row starts, documents, tail rows; :mod:`ddecomp.data.remote`)
and hands row reads to this object: a read asks :class:`~ddecomp.data.chunks.ChunkStore` for
the chunks its byte ranges touch, fetching the missing ones concurrently and checking each
before any of its bytes is copied out. :meth:`prefetch` starts fetching the rows of steps to
come (the VSL loader calls it with the plan's next steps), so in steady state a step's chunks are
in memory when it is built.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ddecomp.data.chunks import ChunkStore


class RemoteTokens:
    """Rows of the token space of a remote dataset; see the module docstring."""

    def __init__(
        self,
        store: ChunkStore,
        dtype: np.dtype,
        url: str,
        cache_dir: str | Path | None,
        cache_limit: int | None,
    ) -> None:
        self.store, self.dtype = store, np.dtype(dtype)
        self.url, self.cache_dir, self.cache_limit = url, cache_dir, cache_limit

    def reopen_args(self) -> tuple[str, str | None, int | None]:
        """``(url, cache_dir, cache_limit)``: what a worker process opens again."""
        cache = None if self.cache_dir is None else str(self.cache_dir)
        return self.url, cache, self.cache_limit

    def _ranges(self, starts: np.ndarray, base: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        starts = np.asarray(starts, dtype=np.int64)
        shard = np.searchsorted(base, starts, side="right") - 1
        return shard, (starts - base[shard]) * self.dtype.itemsize

    def _chunks(self, starts: np.ndarray, width: int, base: np.ndarray) -> set[tuple[int, int]]:
        shard, lo = self._ranges(starts, base)
        nbytes = width * self.dtype.itemsize
        keys: set[tuple[int, int]] = set()
        for k in np.unique(shard).tolist():
            sel = shard == k
            keys |= self.store.chunks_of(k, lo[sel], lo[sel] + nbytes)
        return keys

    def gather(self, starts: np.ndarray, width: int, out: np.ndarray, base: np.ndarray) -> None:
        """Tokens ``[s, s + width)`` of each global offset in ``starts`` into ``out``."""
        self.store.fetch_all(self._chunks(starts, width, base))
        shard, lo = self._ranges(starts, base)
        nbytes = width * self.dtype.itemsize
        for i, (k, a) in enumerate(zip(shard.tolist(), lo.tolist(), strict=True)):
            out[i] = np.frombuffer(self.store.read(k, a, a + nbytes), dtype=self.dtype)

    def tokens(self, shard: int, lo: int, hi: int) -> np.ndarray:
        """Tokens ``[lo, hi)`` of shard ``shard``."""
        if lo == hi:
            return np.zeros(0, dtype=self.dtype)
        item = self.dtype.itemsize
        return np.frombuffer(self.store.read(shard, lo * item, hi * item), dtype=self.dtype)

    def prefetch(self, starts: np.ndarray, width: int, base: np.ndarray) -> None:
        """Start fetching the rows at ``starts`` in the background."""
        if len(starts):
            self.store.prefetch(self._chunks(starts, width, base))
