"""``--out URL``: a dataset written to object storage (any fsspec URL), with the local guarantees.

Shards are written as for a local directory, into a *staging* directory on the machine that
writes them (``$DDECOMP_CACHE/staging/<hash of the URL>``), then uploaded by the same job:
every file of the shard first, its ``done.json`` record last, and the local copies are removed.
The driver uploads the tokenizer and then ``manifest.json`` last. An object store has no rename,
but an object appears whole or not at all (a multipart upload killed midway is never
completed), so the order gives the same commit points as a local directory:

- a shard is finished when its record exists (and every file it lists has its size): a rerun
  keeps it; a shard whose upload was killed has no record and is written again (same bytes);
- the manifest is written after every record, so a reader (:mod:`ddecomp.data.remote`, which
  also checks every file's sha256) never reads an unfinished dataset;
- each shard's tokens also get chunk digests (``shards/NNNNN.chunks.bin``: the sha256 of every
  64 KiB, named with its own sha256 in the token record), so a reader that fetches only the
  bytes of the rows it needs checks every byte it serves (:mod:`ddecomp.data.chunks`);
- a rerun keeps a finished shard only if every file's size and sha256 in storage are the
  record's (read back once per resume: an object replaced with same-size bytes is redone).

Ownership is the local rule applied to the prefix: ``.prepare.json`` holds the run's identity;
a prefix holding other objects but no ``.prepare.json`` is refused; another identity is refused
unless ``overwrite``, which deletes the manifest first, then ddecomp's own objects, the identity
last. Credentials and endpoints come from the backend's usual configuration (for S3:
``AWS_*`` variables, ``~/.aws``, ``AWS_ENDPOINT_URL`` for an S3-compatible server).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from ddecomp.data.chunks import CHUNK_BYTES, chunk_digests, chunks_file
from ddecomp.data.layout import FORMAT_NAME, MANIFEST, SHARD_DIR, TOKENIZER_FILE, shard_files
from ddecomp.data.remote import default_cache, remote_filesystem
from ddecomp.dirlock import DirLock
from ddecomp.errors import UserError
from ddecomp.io import (
    canonical_sha256,
    parse_json,
    write_bytes_atomic,
    write_json_atomic,
)
from ddecomp.preparing.outdir import _OWN_SHARD_NAME, STATE_FILE, claim_dir, claim_staging
from ddecomp.preparing.shards import done_path
from ddecomp.version import __version__


def staging_dir(url: str) -> Path:
    """Where shards of ``url`` are written before they are uploaded (same path on every node)."""
    return default_cache() / "staging" / hashlib.sha256(url.encode()).hexdigest()[:16]


def claim_out(
    out: Path, url: str | None, identity: dict[str, Any], overwrite: bool, lock: DirLock
) -> dict[str, Any] | None:
    """Own the output: the directory ``out``, or the prefix ``url`` and its staging ``out``
    (locked first: one writer per directory). Returns the finished manifest when done."""
    lock.acquire()
    if url is None:
        return claim_dir(out, identity, overwrite)
    finished = RemoteOut(url).claim(identity, overwrite)
    if finished is None:  # staging holds only this run's files (another run's are removed)
        claim_staging(out, identity)
    return finished


class RemoteOut:
    """The output prefix at ``url``: claim it, find finished shards, upload files."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.fs, root = remote_filesystem(self.url)
        self.root = root.rstrip("/")
        self._sizes: dict[str, int] = {}

    def _path(self, rel: str) -> str:
        return f"{self.root}/{rel}"

    def _read_json(self, rel: str) -> Any:
        try:
            return parse_json(self.fs.cat_file(self._path(rel)))
        except FileNotFoundError:
            return None
        except ValueError as e:
            raise UserError(f"{self.url}/{rel} is unreadable ({e}); choose another --out") from e

    def _listing(self) -> dict[str, int]:
        """Every object under the prefix: relative name -> size."""
        try:
            found = self.fs.find(self.root, detail=True)
        except FileNotFoundError:
            return {}
        n = len(self.root) + 1
        return {k[n:]: int(v["size"]) for k, v in found.items() if k.startswith(self.root + "/")}

    def claim(self, identity: dict[str, Any], overwrite: bool) -> dict[str, Any] | None:
        """Make the prefix ours for ``identity``; the finished manifest if already done."""
        self._sizes = self._listing()
        if self._sizes:
            state = self._read_json(STATE_FILE)
            if not isinstance(state, dict) or "identity" not in state:
                raise UserError(
                    f"--out {self.url} is not empty and holds no ddecomp dataset (no "
                    f"{STATE_FILE}): choose an empty or new prefix"
                )
            if overwrite:
                self._remove_own()
            elif state["identity"] != identity:
                diff = sorted(
                    k
                    for k in set(state["identity"]) | set(identity)
                    if state["identity"].get(k) != identity.get(k)
                )
                raise UserError(
                    f"--out {self.url} holds a dataset prepared with other arguments "
                    f"(differs in: {', '.join(diff)}); pass --overwrite to replace "
                    "it or choose another prefix"
                )
            else:
                man = self._read_json(MANIFEST)
                if isinstance(man, dict) and man.get("prepare", {}).get(
                    "identity_sha256"
                ) == canonical_sha256(identity):
                    return man
        self.put_bytes(STATE_FILE, _json({"identity": identity, "ddecomp": __version__}))
        return None

    def _remove_own(self) -> None:
        man = self._read_json(MANIFEST)
        if man is not None and (not isinstance(man, dict) or man.get("format") != FORMAT_NAME):
            raise UserError(
                f"{self.url}/{MANIFEST} was not written by ddecomp; choose another --out"
            )
        own = (
            [MANIFEST]
            + [
                rel
                for rel in self._sizes
                if rel == TOKENIZER_FILE
                or (
                    rel.startswith(f"{SHARD_DIR}/")
                    and _OWN_SHARD_NAME.fullmatch(rel[len(SHARD_DIR) + 1 :])
                )
            ]
            + [STATE_FILE]
        )
        for rel in own:  # the manifest first: no reader sees it while its files go
            if rel in self._sizes:
                self.fs.rm_file(self._path(rel))
        self._sizes = {}

    def claim_listing(self) -> None:
        """List the prefix once (sizes), for :meth:`done` on every shard of a run."""
        self._sizes = self._listing()

    def path(self, rel: str) -> str:
        return self._path(rel)

    def done(self, index: int) -> dict[str, Any] | None:
        """The shard's record if it was uploaded whole: the record, and each file's size and
        sha256 (read back: an object replaced in storage with same-size bytes is redone; this
        costs one read of the finished shards per resume)."""
        rel = str(done_path(Path(), index))
        if rel not in self._sizes:
            return None
        rec = self._read_json(rel)
        try:
            files = [*shard_files(rec)]
            ch = rec["files"]["tokens"].get("chunks")
            if isinstance(ch, dict):
                files.append({"path": ch["path"], "bytes": ch["size"], "sha256": ch["sha256"]})
            ok = all(self._sizes.get(f["path"]) == f["bytes"] for f in files)
            ok = ok and all(self._sha256(f["path"]) == f["sha256"] for f in files)
        except (KeyError, TypeError):
            return None
        return rec if ok else None

    def _sha256(self, rel: str) -> str:
        h = hashlib.sha256()
        with self.fs.open(self._path(rel), "rb", block_size=1 << 23) as f:
            while block := f.read(1 << 23):
                h.update(block)
        return h.hexdigest()

    def put_bytes(self, rel: str, data: bytes) -> None:
        self.fs.pipe_file(self._path(rel), data)

    def upload_last(self, staging: Path) -> None:
        """The tokenizer (if any), then the manifest: the dataset's commit point, last."""
        for name in (TOKENIZER_FILE, MANIFEST):
            if (staging / name).is_file():
                self.fs.put_file(str(staging / name), self._path(name))

    def upload_shard(self, staging: Path, rec: dict[str, Any]) -> None:
        """Upload a written shard: its files and their chunk digests, then its record (which
        names the digests' file and sha256, so the manifest covers them); remove the local
        copies."""
        tok = rec["files"]["tokens"]
        rel = chunks_file(rec["name"])
        digests = chunk_digests(staging / tok["path"], CHUNK_BYTES)
        tok["chunks"] = {"bytes": CHUNK_BYTES, "path": rel, "size": len(digests),
                         "sha256": hashlib.sha256(digests).hexdigest()}  # fmt: skip
        write_bytes_atomic(staging, rel, [digests])
        write_json_atomic(done_path(staging, rec["index"]), rec)
        files = [f["path"] for f in shard_files(rec)] + [rel, str(done_path(Path(), rec["index"]))]
        for rel in files:  # the record last
            self.fs.put_file(str(staging / rel), self._path(rel))
        for rel in files:
            (staging / rel).unlink(missing_ok=True)


def _json(obj: Any) -> bytes:
    return (json.dumps(obj, indent=1) + "\n").encode()
