"""Datasets in object storage (any fsspec URL: ``s3://``, ``gs://``, ...), read through a cache.

``open_dataset(URL, cache_dir=...)`` and ``verify URL`` first make a local copy that a
:class:`~ddecomp.data.dataset.Dataset` then memory-maps exactly like a local directory:

1. the remote ``manifest.json`` is read, its format, version and fingerprint checked
   (:func:`~ddecomp.data.layout.check_manifest` as for a local one);
2. the copy lives in ``CACHE/<fingerprint>/``: the fingerprint names every file's sha256, so a
   cached file is never from another version of the dataset, and a dataset prepared again
   (another fingerprint) gets its own directory;
3. every file the manifest lists (the tokenizer, each shard's files) that is not yet cached is
   downloaded whole to a temporary name in its final directory while its sha256 is computed,
   compared with the manifest, and only then renamed into place;
4. ``manifest.json`` is written into the copy last: a copy with a manifest is complete.

Several processes on a node can share a cache without a lock: each downloads to its own
temporary name and renames a verified file into place (``os.replace`` is atomic), so a reader
sees no file or a whole verified one; at worst two processes fetch the same file once each. A
file already cached is trusted by its size (it was hashed when it was fetched);
``ddecomp verify URL`` hashes the copy again.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, TypeGuard

from ddecomp.data.layout import (
    FORMAT_NAME,
    FORMAT_VERSION,
    MANIFEST,
    check_manifest,
    fingerprint,
    shard_files,
)
from ddecomp.errors import DataError, UserError
from ddecomp.io import atomic_file, file_record, url_filesystem, write_bytes_atomic

CACHE_ENV = "DDECOMP_CACHE"  # the cache's root when cache_dir is not given


def is_url(root: object) -> TypeGuard[str]:
    """A dataset location with a scheme (``s3://b/p``); a local path is a Path or plain str."""
    return isinstance(root, str) and "://" in root and not root.startswith("file://")


def default_cache() -> Path:
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "ddecomp"


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
        man = json.loads(raw)
    except ValueError as e:
        raise UserError(f"{where}: unreadable manifest ({e})") from e
    if not isinstance(man, dict) or man.get("format") != FORMAT_NAME:
        raise UserError(f"{where}: not a ddecomp manifest")
    if man.get("version") != FORMAT_VERSION or type(man.get("version")) is not int:
        raise UserError(
            f"{where}: format version {man.get('version')!r} is not supported "
            f"(this ddecomp reads {FORMAT_VERSION})"
        )
    check_manifest(man, Path(where))
    if fingerprint(man) != man["fingerprint"]:
        raise DataError(f"{where}: fingerprint does not match the manifest's content")
    return man, bytes(raw)


def _fetch(fs: Any, src: str, dst: Path, rec: dict[str, Any], url: str) -> None:
    """Download ``src`` to ``dst`` if not cached; sha256 checked before it is renamed in."""
    if dst.is_file() and dst.stat().st_size == rec["bytes"]:
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


def cache_dataset(url: str, cache_dir: str | Path | None = None) -> Path:
    """A complete, verified local copy of the dataset at ``url``; returns its directory."""
    fs, root = url_filesystem(url)
    root = root.rstrip("/")
    man, raw = _read_manifest(fs, root, url)
    local = Path(cache_dir or default_cache()) / man["fingerprint"]
    if (local / MANIFEST).is_file():
        return local  # written last: everything it lists is here
    records = [rec for sh in man["shards"] for rec in shard_files(sh)]
    tok = man["tokenizer"]
    if tok.get("file"):  # its size is not in the manifest; its sha256 is
        size = int(fs.info(f"{root}/{tok['file']}")["size"])
        records.append(file_record(tok["file"], size, tok["sha256"]))
    for rec in records:
        _fetch(fs, f"{root}/{rec['path']}", local / rec["path"], rec, url)
    write_bytes_atomic(local, MANIFEST, [raw])  # the copy's commit point
    return local
