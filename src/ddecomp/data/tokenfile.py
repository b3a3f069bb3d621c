"""Where a shard's tokens are: its own ``tokens.bin``, or a range of an ``--in-place`` file.

A dataset prepared ``--in-place`` holds no token file: its manifest's ``tokens_file`` names the
input file (absolute path, size, header bytes, dtype) and each shard's token record the byte
``offset`` of its range there (and the range's sha256, which ``verify`` checks). Both kinds are
read here through one memory map, so the readers never tell them apart.

An in-place file is not ddecomp's, so it is checked where it is used. Opening a dataset compares
its size, ``mtime_ns`` and inode with those recorded at prepare, and an ``.npy`` header's sha256
(its dtype and byte order), one line naming the file on any difference: an edit of the same size
is refused before a token is served. Each map checks the size on the descriptor it maps, so a
file truncated after the open's check is a :class:`DataError`, never a SIGBUS. While a job runs,
:class:`InPlaceGuard` re-checks the file's size and ``mtime_ns`` (one ``fstat``, about 3 us)
before every read of its tokens: a file truncated or rewritten between two reads is a one-line
error at the next read. Left open: a truncation *during* a read (the page fault is a SIGBUS),
and an edit that restores size, ``mtime_ns`` and inode, which only ``verify`` (every range's
sha256) catches.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ddecomp.errors import DataError


def _identity(path: Path, tf: Mapping[str, Any], st: os.stat_result) -> None:
    if st.st_size != tf["bytes"]:
        raise DataError(
            f"{path}: {st.st_size} bytes, the dataset indexed {tf['bytes']} in place "
            "(the file changed); prepare again"
        )
    recorded = (tf.get("mtime_ns"), tf.get("inode"))
    if recorded != (None, None) and recorded != (st.st_mtime_ns, st.st_ino):
        raise DataError(
            f"{path}: changed since the dataset indexed it in place (modification time or inode "
            f"differs from the one recorded, same size {st.st_size}); prepare again"
        )


def token_file(man: Mapping[str, Any]) -> Path | None:
    """The token file an ``--in-place`` dataset indexes, checked present with its recorded size,
    modification time, inode and ``.npy`` header (a :class:`DataError` naming it otherwise);
    None for a dataset that holds its tokens."""
    tf = man.get("tokens_file")
    if tf is None:
        return None
    path = Path(tf["path"])
    try:
        with open(path, "rb") as fh:
            _identity(path, tf, os.fstat(fh.fileno()))
            head = fh.read(int(tf["header"])) if "header_sha256" in tf else b""
    except OSError:
        raise DataError(
            f"{path}: the token file this dataset indexes in place is missing "
            "(moved or deleted?); put it back or prepare again"
        ) from None
    if head and hashlib.sha256(head).hexdigest() != tf["header_sha256"]:
        raise DataError(
            f"{path}: its .npy header changed since the dataset indexed it in place (dtype, "
            "byte order or shape); prepare again"
        )
    return path


def token_array(root: Path, man: Mapping[str, Any], shard: Mapping[str, Any]) -> np.ndarray:
    """A shard's tokens, memory-mapped read-only (from ``tokens_file`` for an in-place one).

    The size is checked on the descriptor that is mapped, so a shorter file is a
    :class:`DataError` here, not a SIGBUS at the first read past its end."""
    rec = shard["files"]["tokens"]
    dtype = np.dtype(man["dtype"])
    n = rec["bytes"] // dtype.itemsize
    if n == 0:  # np.memmap refuses empty files
        return np.zeros(0, dtype=dtype)
    tf = man.get("tokens_file") if "offset" in rec else None
    if tf is not None:
        path, offset, want = Path(tf["path"]), int(rec["offset"]), int(tf["bytes"])
    else:
        path, offset, want = root / rec["path"], 0, int(rec["bytes"])
    try:
        with open(path, "rb") as fh:
            st = os.fstat(fh.fileno())
            if tf is not None:
                _identity(path, tf, st)
            elif st.st_size != want:
                raise DataError(f"{path}: {st.st_size} bytes, manifest says {want}")
            arr = np.memmap(fh, dtype=dtype, mode="r", offset=offset, shape=(n,))
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror})") from e
    return arr.view(np.ndarray)


class InPlaceGuard:
    """The in-place token file of an open dataset, re-checked (size, ``mtime_ns``: one
    ``fstat``) before each read of its tokens; for a dataset that holds its tokens, a no-op."""

    def __init__(self, man: Mapping[str, Any]) -> None:
        tf = man.get("tokens_file")
        self._fd: int | None = None
        if tf is not None:
            self.path = Path(tf["path"])
            try:
                self._fd = os.open(self.path, os.O_RDONLY)
                mtime = os.fstat(self._fd).st_mtime_ns
            except OSError as e:
                raise DataError(f"{self.path}: cannot be read ({e.strerror})") from e
            self._stamp = (int(tf["bytes"]), int(tf.get("mtime_ns", mtime)))

    def check(self) -> None:
        if self._fd is None:
            return
        st = os.fstat(self._fd)
        if st.st_size < self._stamp[0]:
            raise DataError(
                f"{self.path}: truncated to {st.st_size} bytes while in use (the dataset "
                f"indexed {self._stamp[0]} in place); put the file back and resume, or prepare "
                "again"
            )
        if (st.st_size, st.st_mtime_ns) != self._stamp:
            raise DataError(
                f"{self.path}: changed while in use (size or modification time); the rows read "
                "from now on would not be the indexed ones: prepare again"
            )

    def __del__(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
