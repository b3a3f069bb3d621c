"""Atomic writes and hashing: the I/O every writer in ddecomp goes through.

Every file is written to a temporary name in its final directory and renamed into place, so a
reader or a rerun never sees half a file (``os.replace`` is atomic on POSIX within a directory).
The sha256 of a file is computed from the bytes as they are written, in a thread beside the
writes (no second read of what was just written).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

SHA256_HEX = re.compile(r"[0-9a-f]{64}")  # a sha256 as the records write it


@contextlib.contextmanager
def atomic_file(path: str | Path, fsync: bool = False) -> Iterator[BinaryIO]:
    """Open a temporary file next to ``path`` for writing; rename it to ``path`` on success.

    On an exception the temporary file is removed and ``path`` is untouched, so a reader never
    sees half a file. ``fsync`` also flushes it to disk before the rename (power-loss safety;
    a killed process needs only the rename).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp creates the file 0600 (private while it is written); the finished file gets
        # the mode open() would give it, so another user's training job can read the dataset.
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o666 & ~current_umask())
            yield f
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.filename is None and e.errno is not None:
            raise OSError(e.errno, e.strerror, str(path)) from e  # say which file (full disk)
        raise


def current_umask() -> int:
    """The process umask, read without changing it where Linux exposes it (no race with threads).

    Elsewhere it is read the only portable way, by setting and restoring it.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_record(rel: str, nbytes: int, sha: str) -> dict[str, Any]:
    return {"path": rel, "bytes": nbytes, "sha256": sha}


def _pieces(chunks: list[Any], size: int = 1 << 22) -> list[memoryview]:
    out: list[memoryview] = []
    for c in chunks:
        mv = memoryview(c).cast("B")
        out.extend(mv[i : i + size] for i in range(0, max(mv.nbytes, 1), size))
    return out


def write_bytes_atomic(root: Path, rel: str, chunks: list[Any]) -> dict[str, Any]:
    """Write the buffers in ``chunks`` to ``root/rel`` atomically; return its file record.

    The sha256 runs in a second thread over the same 4 MiB pieces while this one writes them
    (both release the GIL), so a large shard costs about max(hash, write), not their sum:
    sha256 is ~1.4 GB/s on one core here, the write to page cache ~3 GB/s.
    """
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    pieces = _pieces(chunks)
    h = hashlib.sha256()

    def digest() -> None:
        for p in pieces:
            h.update(p)

    with atomic_file(path) as f:
        if sum(p.nbytes for p in pieces) < 1 << 24:
            digest()
            for p in pieces:
                f.write(p)
        else:
            with ThreadPoolExecutor(1) as ex:
                hashing = ex.submit(digest)
                for p in pieces:
                    f.write(p)
                hashing.result()
    return file_record(rel, sum(p.nbytes for p in pieces), h.hexdigest())


def write_npy_atomic(root: Path, rel: str, arr: np.ndarray) -> dict[str, Any]:
    """Save ``arr`` as a standard ``.npy`` file atomically (header written by numpy's own code)."""
    arr = np.ascontiguousarray(arr)
    header = _npy_header(arr)
    return write_bytes_atomic(root, rel, [header, arr])


def _npy_header(arr: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, np.lib.format.header_data_from_array_1_0(arr))
    return buf.getvalue()


def write_json_atomic(path: Path, obj: Any) -> None:
    data = (json.dumps(obj, indent=1, sort_keys=False) + "\n").encode()
    write_bytes_atomic(path.parent, path.name, [data])


def parse_json(data: str | bytes) -> Any:
    """``json.loads`` for every JSON ddecomp reads back (records, states, ``latest.json``, log
    lines): nesting deeper than the parser's recursion limit (~1,000 levels; ``[[[...]]]``
    100,000 deep in a damaged or forged file) is a ``ValueError`` like any other malformed
    JSON, which every reader turns into one line, instead of a ``RecursionError``."""
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def read_json(path: Path) -> Any:
    """The JSON in ``path`` (:func:`parse_json`: malformed or too deep is a ``ValueError``)."""
    with open(path, encoding="utf-8") as f:
        return parse_json(f.read())


def check_output_file(path: str | Path, flag: str) -> None:
    """Refuse, before any work, an output file that cannot be written: its directory missing
    or not writable, or a directory in its place (``--plot /no/dir/x.png``)."""
    from ddecomp.errors import UserError

    p = Path(path)
    parent = p.parent
    if p.is_dir():
        raise UserError(f"{flag} {path} is a directory; give a file name such as {p / 'x.png'}")
    if not parent.is_dir():
        raise UserError(f"{flag} {path}: no directory {parent}; create it or choose another path")
    if not os.access(parent, os.W_OK):
        raise UserError(f"{flag} {path}: {parent} is not writable; choose another path")


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(chunk):
            h.update(b)
    return h.hexdigest()


def canonical_sha256(obj: Any) -> str:
    return hashlib.sha256(
        json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()


def url_filesystem(url: str) -> tuple[Any, str]:
    """``(fsspec filesystem, path)`` of ``url``; a missing fsspec or backend is a user error."""
    from ddecomp.errors import UserError

    try:
        import fsspec
    except ImportError:
        raise UserError(f"{url}: URLs need fsspec; pip install fsspec") from None
    # fsspec caches a filesystem per arguments: name the S3 endpoint, so one set in the
    # environment after a first use (another server, a test's) is not served a stale client
    endpoint = os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL_S3")
    opts = {"endpoint_url": endpoint} if endpoint and url.startswith(("s3://", "s3a://")) else {}
    try:
        fs, path = fsspec.core.url_to_fs(url, **opts)
    except (ImportError, ValueError) as e:
        raise UserError(
            f"{url}: {type(e).__name__}: {str(e).strip().splitlines()[0] if str(e) else ''}; "
            "install the fsspec backend for this scheme (e.g. s3fs, gcsfs)"
        ) from None
    return fs, str(path)
