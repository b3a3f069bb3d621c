"""Token bytes of a remote dataset, read on demand in hashed chunks through a bounded cache.

A shard's token file in object storage is read in *chunks*: byte ranges of ``chunk_bytes``
(the last one shorter) whose sha256 digests ``prepare --out URL`` recorded
(:func:`chunk_digests`, uploaded as ``shards/NNNNN.chunks.bin``; its own sha256 is in the
manifest's token record, so the fingerprint covers every digest). A dataset without them (prepared
locally and copied, or by an older ddecomp) is one chunk per shard checked against the shard's
sha256: the whole shard is read for its first row.

Every chunk is checked before any of its bytes is served, wherever it comes from:

- fetched (one ranged GET): a digest other than the recorded one is a :class:`DataError` naming
  the object and the byte range, and nothing of it is served or cached;
- from the disk cache (``CACHE/<fingerprint>/chunks/``): hashed again on every read (a cached
  copy replaced with same-size bytes is dropped and fetched again); sha256 runs at about
  1 GB/s here, the cost of a disk read of the same bytes;
- from memory: kept only after the check (an LRU of ``MEMORY_BYTES``).

The disk cache holds at most ``cache_limit`` bytes of chunks (None: unbounded; 0: none, chunks
stay in memory only): the least recently used are deleted first, and a reader that restarts
counts what is already there. Several processes sharing a cache directory each keep their own
count (each at most ``cache_limit``). Index files (row starts, documents) are not chunks: they
are fetched whole on open (8 bytes per row, under 1% of the token bytes at L >= 256).

:meth:`ChunkStore.prefetch` fetches chunks in background threads (``FETCH_THREADS``), so the
loader can ask for the next steps' rows while the current one trains.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ddecomp.errors import DataError
from ddecomp.io import url_filesystem

CHUNK_BYTES = 1 << 16  # prepare's chunk: 64 KiB, digests 0.05% of the tokens
MEMORY_BYTES = 256 << 20  # verified chunks kept in memory (prefetched steps included)
FETCH_THREADS = 16
DIGEST = 32


def chunks_file(shard: str) -> str:
    """``shards/NNNNN.chunks.bin``: the sha256 of each chunk of the shard's tokens."""
    return f"shards/{shard}.chunks.bin"


def chunk_record(sh: dict[str, Any], where: str) -> dict[str, Any] | None:
    """A shard's checked ``files.tokens.chunks`` record (None if absent); a forged one (another
    path, sizes that do not fit, no sha256) is a DataError naming the shard."""
    tok = sh["files"]["tokens"]
    ch = tok.get("chunks")
    if ch is None:
        return None
    ok = isinstance(ch, dict) and set(ch) == {"bytes", "path", "size", "sha256"}
    if ok:
        cb, size, sha = ch["bytes"], ch["size"], ch["sha256"]
        ok = type(cb) is int and type(size) is int and isinstance(sha, str)
        ok = ok and 1 <= cb <= 1 << 30 and len(sha) == 64
        ok = ok and ch["path"] == chunks_file(sh["name"])
        ok = ok and size == DIGEST * -(-tok["bytes"] // max(1, cb))
        ok = ok and all(c in "0123456789abcdef" for c in sha)
    if not ok:
        raise DataError(f"{where}: shard {sh['name']}'s files.tokens.chunks is damaged or forged")
    return dict(ch)


def chunk_digests(path: Path, chunk_bytes: int = CHUNK_BYTES) -> bytes:
    """The sha256 digest of every ``chunk_bytes`` range of the file at ``path``, concatenated."""
    out = bytearray()
    with open(path, "rb") as f:
        while block := f.read(chunk_bytes):
            out += hashlib.sha256(block).digest()
    return bytes(out)


class ShardChunks:
    """Where a shard's chunks are and what their digests must be."""

    def __init__(self, obj: str, rel: str, size: int, chunk_bytes: int, digests: bytes) -> None:
        self.obj, self.rel, self.size = obj, rel, size
        self.chunk_bytes, self.digests = chunk_bytes, digests
        self.count = -(-size // chunk_bytes) if size else 0
        if len(digests) != DIGEST * self.count:
            got = len(digests) // DIGEST
            raise DataError(f"{rel}: {got} chunk digests for {self.count} chunks")

    def digest(self, c: int) -> bytes:
        return self.digests[c * DIGEST : (c + 1) * DIGEST]

    def span(self, c: int) -> tuple[int, int]:
        lo = c * self.chunk_bytes
        return lo, min(self.size, lo + self.chunk_bytes)


_CHUNK_NAME = re.compile(r"\d{5,}\.\d{9,}\.chunk")  # shard.chunk (see ChunkStore._name)
_TMP_NAME = re.compile(r"\.\d{5,}\.\d{9,}\.chunk\.\d+\.\d+\.tmp")  # its unfinished write


class ChunkStore:
    """Verified chunks of a dataset's token files (see the module docstring)."""

    def __init__(
        self, fs: Any, url: str, shards: list[ShardChunks], cache: Path, cache_limit: int | None
    ) -> None:
        self.fs, self.url, self.shards = fs, url.rstrip("/"), shards
        self._fs_pid = os.getpid()
        self.dir, self.limit = cache, cache_limit
        self._lock = threading.Lock()
        self._mem: OrderedDict[tuple[int, int], bytes] = OrderedDict()
        self._mem_bytes = 0
        self._disk: OrderedDict[str, int] = OrderedDict()
        self._disk_bytes = 0
        self.peak_disk_bytes = 0
        self.fetched_bytes = 0
        self._pending: dict[tuple[int, int], Future[bytes]] = {}
        self._pool: ThreadPoolExecutor | None = None
        if self.limit != 0 and self.dir.is_dir():  # a restarted reader counts what is there
            # only the exact names this store writes (a file of the user's in the cache survives)
            for p in self.dir.glob(".*.tmp"):  # a killed reader's unfinished write
                if _TMP_NAME.fullmatch(p.name):
                    p.unlink(missing_ok=True)
            own = (p for p in self.dir.glob("*.chunk") if _CHUNK_NAME.fullmatch(p.name))
            found = sorted(own, key=lambda p: p.stat().st_mtime_ns)
            for p in found:
                self._disk[p.name] = p.stat().st_size
                self._disk_bytes += self._disk[p.name]
            self._evict(0)

    # ---- reading -------------------------------------------------------------------------------
    def read(self, shard: int, lo: int, hi: int) -> bytes:
        """Bytes ``[lo, hi)`` of shard ``shard``'s token file, every chunk checked."""
        sc = self.shards[shard]
        first, last = lo // sc.chunk_bytes, (hi - 1) // sc.chunk_bytes
        parts = [self.chunk(shard, c) for c in range(first, last + 1)]
        base = first * sc.chunk_bytes
        return b"".join(parts)[lo - base : hi - base]

    def chunks_of(self, shard: int, lo: np.ndarray, hi: np.ndarray) -> set[tuple[int, int]]:
        """The chunks that byte ranges ``[lo, hi)`` of a shard touch."""
        cb = self.shards[shard].chunk_bytes
        first, last = lo // cb, (hi - 1) // cb
        out = set(zip([shard] * first.size, first.tolist(), strict=True))
        more = np.flatnonzero(last > first)
        for i in more.tolist():
            out.update((shard, c) for c in range(int(first[i]) + 1, int(last[i]) + 1))
        return out

    def _check_fork(self) -> None:
        """In a forked process (a loader worker): a fresh lock, pool and filesystem; the
        parent's threads and their pending fetches did not come along."""
        if self._fs_pid != os.getpid():
            self._lock = threading.Lock()
            self._pending, self._pool = {}, None
            self.fs, self._fs_pid = url_filesystem(self.url)[0], os.getpid()

    def chunk(self, shard: int, c: int) -> bytes:
        """Chunk ``c`` of a shard: from memory, the disk cache or storage, checked."""
        self._check_fork()
        key = (shard, c)
        with self._lock:
            got = self._mem.get(key)
            if got is not None:
                self._mem.move_to_end(key)
                return got
            fut = self._pending.get(key)
        if fut is not None:
            return fut.result()
        return self._load(key)

    def fetch_all(self, keys: Iterable[tuple[int, int]]) -> None:
        """Make every chunk of ``keys`` available, fetching the missing ones concurrently."""
        futs = [f for f in (self._submit(k) for k in sorted(keys)) if f is not None]
        for f in futs:
            f.result()

    def prefetch(self, keys: Iterable[tuple[int, int]]) -> None:
        """Start fetching ``keys`` in the background (errors surface when a chunk is read)."""
        for k in sorted(keys):
            self._submit(k)

    def _submit(self, key: tuple[int, int]) -> Future[bytes] | None:
        self._check_fork()
        with self._lock:
            if key in self._mem:
                return None
            fut = self._pending.get(key)
            if fut is None:
                fut = self._pending[key] = self._executor().submit(self._load, key)
            return fut

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(FETCH_THREADS)
        return self._pool

    def _load(self, key: tuple[int, int]) -> bytes:
        try:
            data = self._from_disk(key)
            if data is None:
                data = self._fetch(key)
                self._to_disk(key, data)
            self._remember(key, data)
            return data
        finally:
            with self._lock:
                self._pending.pop(key, None)

    def _check(self, key: tuple[int, int], data: bytes) -> bool:
        sc = self.shards[key[0]]
        lo, hi = sc.span(key[1])
        return len(data) == hi - lo and hashlib.sha256(data).digest() == sc.digest(key[1])

    def _fetch(self, key: tuple[int, int]) -> bytes:
        sc = self.shards[key[0]]
        lo, hi = sc.span(key[1])
        data = bytes(self.fs.cat_file(sc.obj, start=lo, end=hi))
        with self._lock:
            self.fetched_bytes += len(data)
        if not self._check(key, data):
            raise DataError(
                f"{self.url}/{sc.rel}: bytes [{lo}, {hi}) differ from the sha256 recorded at "
                "prepare (the object was changed in storage); nothing of it is served, prepare "
                "the dataset again"
            )
        return data

    # ---- caches --------------------------------------------------------------------------------
    def _name(self, key: tuple[int, int]) -> str:
        return f"{key[0]:05d}.{key[1]:09d}.chunk"

    def _from_disk(self, key: tuple[int, int]) -> bytes | None:
        if self.limit == 0:
            return None
        path = self.dir / self._name(key)
        try:
            data = path.read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            return None
        if self._check(key, data):
            with self._lock:
                if path.name in self._disk:
                    self._disk.move_to_end(path.name)
            return data
        path.unlink(missing_ok=True)  # replaced or damaged in the cache: fetch it again
        with self._lock:
            self._disk_bytes -= self._disk.pop(path.name, 0)
        return None

    def _to_disk(self, key: tuple[int, int], data: bytes) -> None:
        if self.limit is not None and len(data) > self.limit:
            return  # never above the limit (0: no disk cache)
        name = self._name(key)
        tmp = self.dir / f".{name}.{os.getpid()}.{threading.get_ident()}.tmp"
        with self._lock:  # evict, write and count as one step: no file outlives its count
            if name in self._disk:
                return
            self._evict(len(data))
            try:
                self.dir.mkdir(parents=True, exist_ok=True)
                tmp.write_bytes(data)
                os.replace(tmp, self.dir / name)
            except OSError:  # a full disk, or another reader removed the temp: not cached
                tmp.unlink(missing_ok=True)
                return
            self._disk[name] = len(data)
            self._disk_bytes += len(data)
            self.peak_disk_bytes = max(self.peak_disk_bytes, self._disk_bytes)

    def _evict(self, room: int) -> None:
        """Delete the least recently used chunks until ``room`` more bytes fit (lock held)."""
        if self.limit is None:
            return
        while self._disk and self._disk_bytes + room > self.limit:
            name, size = self._disk.popitem(last=False)
            (self.dir / name).unlink(missing_ok=True)
            self._disk_bytes -= size

    def _remember(self, key: tuple[int, int], data: bytes) -> None:
        with self._lock:
            if key in self._mem:
                return
            self._mem[key] = data
            self._mem_bytes += len(data)
            while self._mem_bytes > MEMORY_BYTES and len(self._mem) > 1:
                _, old = self._mem.popitem(last=False)
                self._mem_bytes -= len(old)

    def disk_bytes(self) -> int:
        """Bytes of chunks in the disk cache now (what this reader counts)."""
        return self._disk_bytes
