"""Where a shard's tokens are: its own ``tokens.bin``, or a range of an ``--in-place`` file.

A dataset prepared ``--in-place`` holds no token file: its manifest's ``tokens_file`` names the
input file (absolute path, size, header bytes, dtype) and each shard's token record the byte
``offset`` of its range there (and the range's sha256, which ``verify`` checks). Both kinds are read
here through one memory map, so the readers never tell them apart. A dataset indexing several files
in place (``--from-tokens F1 F2 --in-place``, ``--from-megatron P1 P2 --in-place``) names them in
``tokens_files`` (a list of the same records) and each shard's token record adds ``file``, the index
of its file there; a one-file dataset keeps ``tokens_file``, so datasets prepared before stay valid
with their fingerprints. :func:`in_place_files` and :func:`shard_file_ref` read both forms, and
:func:`check_in_place` validates them for :func:`~ddecomp.data.layout.check_manifest` (one of the
two keys, absolute paths, sizes; that function checks each shard's ``file`` is an index into
``tokens_files``). Such a dataset is format version 3 (``MULTIFILE_FORMAT_VERSION`` in
:mod:`ddecomp.data.layout`): a reader older than ``tokens_files`` refuses it by its version.

An in-place file is not ddecomp's, so it is checked where it is used. Opening a dataset compares
its size, ``mtime_ns`` and inode with those recorded at prepare, and an ``.npy`` header's sha256
(its dtype and byte order), one line naming the file on any difference: an edit of the same size
is refused before a token is served. Each map checks the size on the descriptor it maps, so a
file truncated after the open's check is a :class:`DataError`, never a SIGBUS. While a job runs,
:class:`InPlaceGuard` re-checks the file's size and ``mtime_ns`` (one ``fstat``, about 3 us)
before every read of its tokens: a file truncated or rewritten between two reads is a one-line
error at the next read (with several files, each file the read touches: one ``fstat`` each).
Left open: a truncation *during* a read (the page fault is a SIGBUS),
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

from ddecomp.data.tailrows import Fields
from ddecomp.errors import DataError
from ddecomp.io import SHA256_HEX


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


def in_place_files(man: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The records of the files an ``--in-place`` dataset indexes (``tokens_file`` or
    ``tokens_files``), in order; empty for a dataset that holds its tokens."""
    if man.get("tokens_files") is not None:
        return list(man["tokens_files"])
    tf = man.get("tokens_file")
    return [] if tf is None else [tf]


def shard_file_ref(man: Mapping[str, Any], shard: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The in-place file record a shard's tokens are a range of; None for a held token file."""
    rec = shard["files"]["tokens"]
    if "offset" not in rec:
        return None
    return in_place_files(man)[int(rec.get("file", 0))]


def token_files(man: Mapping[str, Any]) -> list[Path]:
    """Every token file an ``--in-place`` dataset indexes, each checked present with its
    recorded size, modification time, inode and ``.npy`` header (a :class:`DataError` naming the
    first one that differs); empty for a dataset that holds its tokens."""
    return [_checked(tf) for tf in in_place_files(man)]


def _checked(tf: Mapping[str, Any]) -> Path:
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
    tf = shard_file_ref(man, shard)
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
    """The in-place token files of an open dataset, re-checked (size, ``mtime_ns``: one
    ``fstat`` per file) before each read of its tokens; for a dataset that holds its tokens, a
    no-op. A read checks the files its shards are ranges of (a step of random rows may touch
    every file; a dataset of hundreds of files pays one ``fstat``, ~3 us, per file touched). One
    descriptor is held per file: a dataset of more files than the process may open is refused
    at open with the OS's one line."""

    def __init__(self, man: Mapping[str, Any]) -> None:
        self._files: list[tuple[int, Path, tuple[int, int]]] = []
        for tf in in_place_files(man):
            path = Path(tf["path"])
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError as e:
                self.close()
                raise DataError(f"{path}: cannot be read ({e.strerror})") from e
            mtime = os.fstat(fd).st_mtime_ns
            self._files.append((fd, path, (int(tf["bytes"]), int(tf.get("mtime_ns", mtime)))))

        # each shard's file (-1: tokens held by the dataset), so a read checks only its files
        recs = [sh["files"]["tokens"] for sh in man.get("shards", [])]
        self._shard_file = np.array(
            [int(r.get("file", 0)) if "offset" in r else -1 for r in recs], dtype=np.int64
        )

    def check(self, shards: np.ndarray | None = None) -> None:
        """Re-check the files shards ``shards`` (indices; None: every file) are ranges of."""
        if not self._files:
            return
        files = self._files
        if shards is not None and len(files) > 1:
            which = np.unique(self._shard_file[shards]).tolist()
            files = [self._files[i] for i in which if i >= 0]
        for fd, path, stamp in files:
            st = os.fstat(fd)
            if st.st_size < stamp[0]:
                raise DataError(
                    f"{path}: truncated to {st.st_size} bytes while in use (the dataset "
                    f"indexed {stamp[0]} in place); put the file back and resume, or prepare "
                    "again"
                )
            if (st.st_size, st.st_mtime_ns) != stamp:
                raise DataError(
                    f"{path}: changed while in use (size or modification time); the rows read "
                    "from now on would not be the indexed ones: prepare again"
                )

    def close(self) -> None:
        files, self._files = self._files, []
        for fd, _, _ in files:
            os.close(fd)

    def __del__(self) -> None:
        self.close()


def check_in_place(f: Fields, man: dict[str, Any]) -> list[int]:
    """``--in-place``: the ``tokens_file`` (one file) or ``tokens_files`` (several; shards name
    theirs by ``file``) records checked; each file's size in bytes, empty for neither."""
    if "tokens_file" in man and "tokens_files" in man:
        f.fail("tokens_files", "is set with tokens_file; a dataset has one of them")
    if man.get("tokens_files") is not None:
        tfs, key = f.get(man, "tokens_files", "", list), "tokens_files"
        if not tfs:
            f.fail(key, "is empty")
    elif man.get("tokens_file") is not None:
        tfs, key = [man["tokens_file"]], "tokens_file"
    else:
        return []
    sizes = []
    for i, tf in enumerate(tfs):
        at = key if key == "tokens_file" else f"{key}[{i}]"
        if not isinstance(tf, dict):
            f.fail(at, "is not an object")
        if not Path(f.get(tf, "path", at, str)).is_absolute():
            f.fail(f"{at}.path", "is not an absolute path")
        sizes.append(f.integer(tf, "bytes", at))
        f.integer(tf, "header", at, hi=sizes[-1])
        for k in ("mtime_ns", "inode"):  # datasets prepared before issue 22 lack them
            if k in tf:
                f.integer(tf, k, at, hi=2**64)
        if "header_sha256" in tf and not SHA256_HEX.fullmatch(f.get(tf, "header_sha256", at, str)):
            f.fail(f"{at}.header_sha256", "is not a sha256")
    return sizes
