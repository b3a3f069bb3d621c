"""Datasets in object storage (any fsspec URL: ``s3://``, ``gs://``, ...), read on demand.

``open_dataset(URL, cache_dir=..., cache_limit=BYTES)`` (:func:`open_remote`) reads:

1. the remote ``manifest.json`` on every open, its format, version and fingerprint checked
   (:func:`~ddecomp.data.layout.check_manifest` as for a local one); a remote dataset never
   names a local file (an in-place ``tokens_file`` or ``tokens_files`` is refused: only a
   local manifest may);
2. the index files (row starts, documents, splits, tail rows: 8 bytes per row, no token) into
   ``CACHE/<fingerprint>/``, each downloaded to a temporary name while its sha256 is computed,
   compared with the manifest and only then renamed in; a cached index file is trusted while its
   ``(size, mtime_ns, ctime_ns, inode)`` equal the stamp written when it was verified, and hashed
   again otherwise (a copy replaced with same-size bytes is caught: its ctime moved);
3. token bytes only when a row needs them, in hashed chunks through a cache of at most
   ``cache_limit`` bytes (:mod:`ddecomp.data.chunks`): every byte served was checked.

:func:`cache_dataset` makes a complete verified copy (``ddecomp verify URL`` then checks it all);
:func:`read_remote_manifest` alone is what ``plan URL`` needs. Several processes on a node can
share a cache without a lock: each writes to its own temporary name and renames a verified file
into place (``os.replace`` is atomic). An endpoint that does not answer (``AWS_ENDPOINT_URL``) is
one line within seconds.
"""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path
from typing import Any, TypeGuard
from urllib.parse import urlparse

import numpy as np

from ddecomp.data.chunks import ChunkStore, ShardChunks, chunk_digests, chunk_record
from ddecomp.data.layout import (
    FORMAT_NAME,
    MANIFEST,
    READ_VERSIONS,
    SPLITS,
    check_manifest,
    fingerprint,
    shard_files,
)
from ddecomp.data.remote_tokens import RemoteTokens
from ddecomp.data.tailrows import tail_policy
from ddecomp.decompose import bucket_lengths_for
from ddecomp.errors import DataError, UserError
from ddecomp.io import atomic_file, file_record, parse_json, url_filesystem, write_bytes_atomic

CACHE_ENV = "DDECOMP_CACHE"  # the cache's root when cache_dir is not given
LIMIT_ENV = "DDECOMP_CACHE_LIMIT"  # the chunk cache's bytes when cache_limit is not given
_UNITS = {"": 0, "K": 10, "M": 20, "G": 30, "T": 40}  # binary: 50G = 50 GiB
_CONNECT_S = 5.0


def is_url(root: object) -> TypeGuard[str]:
    """A dataset location with a scheme (``s3://b/p``); a local path is a Path or plain str."""
    return isinstance(root, str) and "://" in root and not root.startswith("file://")


def default_cache() -> Path:
    env = os.environ.get(CACHE_ENV)
    path = Path(env) if env else Path.home() / ".cache" / "ddecomp"
    return check_cache_dir(path, f"${CACHE_ENV}" if env else "the default cache")


def env_cache_limit() -> int | None:
    """``$DDECOMP_CACHE_LIMIT`` in bytes (``500M``, ``50G``: binary units; ``0``: no disk cache),
    or None (no limit) when unset: how the CLI, the trainers and workers bound the chunk cache
    without a keyword to pass."""
    text = os.environ.get(LIMIT_ENV, "").strip()
    if not text:
        return None
    unit = text.upper().removesuffix("IB").removesuffix("B")
    num, shift = (unit[:-1], _UNITS[unit[-1]]) if unit[-1:] in _UNITS else (unit, 0)
    try:
        value = float(num)
    except ValueError:
        value = -1.0
    if not (num and value >= 0 and value * (1 << shift) < 2**63):  # also refuses nan
        raise UserError(
            f"${LIMIT_ENV}={text!r} is not a byte count: give bytes or a size such as 500M or "
            "50G (binary units), or 0 for no disk cache; unset it for no limit"
        )
    return int(value * (1 << shift))


def check_cache_dir(path: Path, what: str) -> Path:
    """``path`` if it is (or can become) a directory, else one line naming it."""
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                raise UserError(
                    f"{what} {path}: {p} is not a directory; point {CACHE_ENV} (or cache_dir) "
                    "at a directory"
                )
            break
    return path


def remote_filesystem(url: str) -> tuple[Any, str]:
    """``(fsspec filesystem, path)`` of ``url``; an S3 endpoint from ``AWS_ENDPOINT_URL`` that
    does not accept a connection within seconds is one line (botocore would retry for 6-9 s and
    end in a traceback)."""
    fs, path = url_filesystem(url)
    endpoint = os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL_S3")
    if url.startswith(("s3://", "s3a://")) and endpoint:
        u = urlparse(endpoint)
        port = u.port or (443 if u.scheme == "https" else 80)
        try:
            socket.create_connection((u.hostname or "", port), timeout=_CONNECT_S).close()
        except OSError as e:
            raise UserError(
                f"{url}: the S3 endpoint AWS_ENDPOINT_URL={endpoint} does not answer "
                f"({e.strerror or e}); start the server or fix the variable"
            ) from None
    return fs, path.rstrip("/")


def read_remote_manifest(url: str) -> dict[str, Any]:
    """The checked manifest of the dataset at ``url`` (one small read, nothing else)."""
    fs, root = remote_filesystem(url)
    return _read_manifest(fs, root, url)[0]


def _read_manifest(fs: Any, root: str, url: str) -> tuple[dict[str, Any], bytes]:
    where = f"{url.rstrip('/')}/{MANIFEST}"
    try:
        raw = fs.cat_file(f"{root}/{MANIFEST}")
    except FileNotFoundError:
        raise UserError(
            f"{url}: no {MANIFEST}, not a prepared ddecomp dataset (an "
            "interrupted prepare? rerun it)"
        ) from None
    try:
        man = parse_json(raw)
    except ValueError as e:
        raise UserError(f"{where}: unreadable manifest ({str(e)[:100]})") from None
    if not isinstance(man, dict) or man.get("format") != FORMAT_NAME:
        raise UserError(f"{where}: not a ddecomp manifest")
    if man.get("version") not in READ_VERSIONS or type(man.get("version")) is not int:
        raise UserError(
            f"{where}: format version {man.get('version')!r} is not supported "
            f"(this ddecomp reads {', '.join(map(str, READ_VERSIONS))})"
        )
    local = DataError(
        f"{where}: names a local token file (tokens_file(s), prepared --in-place); a dataset in "
        "object storage must hold its own token files: it is not read"
    )
    if man.get("tokens_file") is not None or man.get("tokens_files") is not None:  # never local
        raise local
    check_manifest(man, Path(where))
    if fingerprint(man) != man["fingerprint"]:
        raise DataError(f"{where}: fingerprint does not match the manifest's content")
    if any("offset" in sh["files"]["tokens"] for sh in man["shards"]):
        raise local
    return man, bytes(raw)


def manifest_bucket_rows(man: dict[str, Any], split: str) -> dict[int, int]:
    """Rows per bucket of a split from the manifest alone (packed tail rows in their bucket)."""
    if split not in SPLITS:
        raise UserError(f"split {split!r} is not one of {', '.join(SPLITS)}")
    rec = man["splits"][split]
    _, tail_len = tail_policy(man)
    low = man["min_len"] if tail_len is None else min(tail_len, man["min_len"])
    rows = {
        L: int(rec["buckets"].get(str(L), {}).get("rows", 0))
        for L in bucket_lengths_for(low, man["max_len"])
    }
    if tail_len is not None:
        rows[tail_len] += int(rec["tail_bucket"]["rows"])
    return rows


# ---- whole files, verified ---------------------------------------------------------------------
def _stamp(path: Path) -> str:
    st = path.stat()
    return f"{st.st_size} {st.st_mtime_ns} {st.st_ctime_ns} {st.st_ino}"


def _stamp_path(dst: Path) -> Path:
    return dst.with_name(f".{dst.name}.verified")


def _hash_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 23):
            h.update(block)
    return h.hexdigest()


def cached_ok(dst: Path, rec: dict[str, Any]) -> bool:
    """The cached ``dst`` holds ``rec``'s bytes: its stamp is the one written when it was
    verified, or (stamp changed) it hashes to ``rec``'s sha256 again."""
    if not dst.is_file() or dst.is_symlink() or dst.stat().st_size != rec["bytes"]:
        return False
    stamp, mark = _stamp(dst), _stamp_path(dst)
    try:
        if mark.read_text() == f"{stamp} {rec['sha256']}":
            return True
    except OSError:
        pass
    if _hash_file(dst) != rec["sha256"]:
        return False
    write_bytes_atomic(mark.parent, mark.name, [f"{stamp} {rec['sha256']}".encode()])
    return True


def fetch_file(fs: Any, src: str, dst: Path, rec: dict[str, Any], url: str) -> None:
    """``src`` into ``dst`` unless a verified copy is cached; sha256 checked before the rename."""
    if cached_ok(dst, rec):
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    n = 0
    with atomic_file(dst) as out, fs.open(src, "rb", block_size=1 << 23) as f:
        while chunk := f.read(1 << 23):
            h.update(chunk)
            out.write(chunk)
            n += len(chunk)
        if n != rec["bytes"] or h.hexdigest() != rec["sha256"]:  # raising discards the temp
            raise DataError(
                f"{url.rstrip('/')}/{rec['path']}: {n} bytes with another sha256 "
                "than the manifest's (modified or damaged in storage)"
            )
    mark = _stamp_path(dst)
    write_bytes_atomic(mark.parent, mark.name, [f"{_stamp(dst)} {rec['sha256']}".encode()])


def _tokenizer_record(fs: Any, root: str, man: dict[str, Any]) -> list[dict[str, Any]]:
    tok = man["tokenizer"]
    if not tok.get("file"):
        return []
    size = int(fs.info(f"{root}/{tok['file']}")["size"])  # its sha256 is in the manifest
    return [file_record(tok["file"], size, tok["sha256"])]


def _local_root(cache_dir: str | Path | None, fp: str) -> Path:
    base = check_cache_dir(Path(cache_dir), "cache_dir") if cache_dir else default_cache()
    return base / fp


def cache_dataset(url: str, cache_dir: str | Path | None = None) -> Path:
    """A complete, verified local copy of the dataset at ``url`` (each file's sha256, and the
    chunk digests against the token files); returns its directory."""
    fs, root = remote_filesystem(url)
    man, raw = _read_manifest(fs, root, url)
    local = _local_root(cache_dir, man["fingerprint"])
    records = [rec for sh in man["shards"] for rec in shard_files(sh)]
    for rec in records + _tokenizer_record(fs, root, man):
        fetch_file(fs, f"{root}/{rec['path']}", local / rec["path"], rec, url)
    for sh in man["shards"]:  # the chunk digests that reads check: each one of the tokens'
        ch, tok = chunk_record(sh, f"{url.rstrip('/')}/{MANIFEST}"), sh["files"]["tokens"]
        if ch is not None:
            rec = file_record(ch["path"], ch["size"], ch["sha256"])
            fetch_file(fs, f"{root}/{rec['path']}", local / rec["path"], rec, url)
            digests = chunk_digests(local / tok["path"], int(ch["bytes"]))
            if digests != (local / rec["path"]).read_bytes():
                raise DataError(f"{url.rstrip('/')}/{rec['path']}: chunk digests do not match")
    write_bytes_atomic(local, MANIFEST, [raw])  # the storage's manifest, never a cached one
    return local


def open_remote(
    url: str, cache_dir: str | Path | None = None, cache_limit: int | None = None
) -> tuple[Path, dict[str, Any], RemoteTokens]:
    """The dataset at ``url``: ``(local index directory, manifest, token reader)``; its index
    files fetched and checked, its tokens left in storage (read on demand). ``cache_limit``
    None: ``$DDECOMP_CACHE_LIMIT`` (:func:`env_cache_limit`), else no limit."""
    if cache_limit is None:
        cache_limit = env_cache_limit()
    if cache_limit is not None and (
        isinstance(cache_limit, bool) or not isinstance(cache_limit, int) or cache_limit < 0
    ):
        raise UserError(f"cache_limit {cache_limit!r} must be a byte count >= 0 (or None)")
    fs, root = remote_filesystem(url)
    man, _ = _read_manifest(fs, root, url)
    local = _local_root(cache_dir, man["fingerprint"])
    shards = []
    for sh in man["shards"]:
        tok = sh["files"]["tokens"]
        for rec in shard_files(sh)[1:]:  # the index files; tokens stay in storage
            fetch_file(fs, f"{root}/{rec['path']}", local / rec["path"], rec, url)
        ch = chunk_record(sh, f"{url.rstrip('/')}/{MANIFEST}")
        if ch is not None:
            rec = file_record(ch["path"], ch["size"], ch["sha256"])
            fetch_file(fs, f"{root}/{rec['path']}", local / rec["path"], rec, url)
            digests, cb = (local / rec["path"]).read_bytes(), int(ch["bytes"])
        else:  # no chunk digests (a copied or older dataset): one chunk per shard
            digests = bytes.fromhex(tok["sha256"]) if tok["bytes"] else b""
            cb = max(1, int(tok["bytes"]))
        shards.append(ShardChunks(f"{root}/{tok['path']}", tok["path"], tok["bytes"], cb, digests))
    store = ChunkStore(fs, url, shards, local / "chunks", cache_limit)
    return local, man, RemoteTokens(store, np.dtype(man["dtype"]), url, cache_dir, cache_limit)
