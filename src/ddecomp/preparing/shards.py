"""Build and write one shard: document index, validation split, buckets, files, done record.

A shard is a run of consecutive documents. Its work is a pure index build over its token array
followed by atomic writes:

1. document fenceposts: from the tokenizer's lengths, or for a flat token file one
   ``flatnonzero(tokens == eos)`` pass (documents end with their EOS);
2. the held-out split: each document is validation with probability ``val_fraction``, drawn from
   ``default_rng([seed, shard, 1])``, so the split depends only on the data and the seed;
3. :func:`~ddecomp.decompose.decompose_corpus` per split (``spread`` draws from
   ``default_rng([seed, shard, 2])``);
4. with ``--tails pack``, the pieces below ``min`` of each split packed into tail rows
   (:mod:`ddecomp.preparing.tails`, ties seeded by ``default_rng([seed, shard, 3, split])``);
5. files written with their sha256 computed on the fly, then ``NNNNN.done.json`` last.

Shard boundaries depend only on the input and ``--shard-size``, never on ``--workers``, so any
number of workers gives byte-identical files and the same manifest fingerprint.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ddecomp.data.layout import (
    SHARD_DIR,
    SPLITS,
    bucket_file,
    shard_files,
    shard_name,
)
from ddecomp.data.tailrows import tail_file
from ddecomp.decompose import Decomposition, decompose_corpus
from ddecomp.io import (
    file_record,
    read_json,
    sha256_file,
    write_bytes_atomic,
    write_json_atomic,
    write_npy_atomic,
)
from ddecomp.preparing.tails import pack_tails


@dataclass(frozen=True)
class IndexParams:
    """What the index build needs besides the tokens (all part of the dataset's identity)."""

    min_len: int
    max_len: int
    long_docs: str
    seed: int
    val_fraction: float
    tails: str = "drop"
    tail_len: int | None = None  # pack: the tail rows' length (None: min_len)

    @property
    def tail_length(self) -> int:
        return self.min_len if self.tail_len is None else self.tail_len


def document_fences(tokens: np.ndarray, eos_id: int) -> tuple[np.ndarray, int]:
    """Fenceposts ``[0, e1, e2, ...]`` of EOS-terminated documents in a flat token array.

    Returns the fenceposts (int64, length ``n_docs + 1``) and the number of trailing tokens after
    the last EOS, which form a final document without EOS (0 when the array ends with EOS).
    """
    ends = np.flatnonzero(tokens == eos_id) + 1
    trailing = int(tokens.size - (ends[-1] if ends.size else 0))
    fence = np.empty(ends.size + 1 + (trailing > 0), dtype=np.int64)
    fence[0] = 0
    fence[1 : ends.size + 1] = ends
    if trailing:
        fence[-1] = tokens.size
    return fence, trailing


def with_eos(tokens: np.ndarray, fence: np.ndarray, eos_id: int) -> tuple[np.ndarray, np.ndarray]:
    """``tokens`` (documents at ``fence``) with ``eos_id`` appended to each document that does
    not end with it (an empty document becomes ``[eos_id]``); the new fenceposts."""
    missing = missing_eos(tokens, fence, eos_id)
    if not missing.any():
        return tokens, fence
    out = np.insert(tokens, fence[1:][missing], np.asarray(eos_id, dtype=tokens.dtype))
    shift = np.zeros(fence.size, dtype=np.int64)
    np.cumsum(missing, out=shift[1:])
    return out, fence + shift


def missing_eos(tokens: np.ndarray, bounds: np.ndarray, eos_id: int) -> np.ndarray:
    """Per document at ``bounds``: True when it is empty or does not end with ``eos_id``."""
    empty = bounds[1:] == bounds[:-1]
    last = np.zeros(empty.size, dtype=bool)
    ends = bounds[1:][~empty] - 1
    last[~empty] = tokens[ends] == eos_id
    return ~last


def build_index(
    fence: np.ndarray, shard_index: int, p: IndexParams
) -> tuple[np.ndarray, dict[str, Decomposition]]:
    """Split documents into train/val and decompose each split (pure; no I/O)."""
    starts = fence[:-1]
    lengths = np.diff(fence)
    n = lengths.size
    if p.val_fraction > 0:
        split = (np.random.default_rng([p.seed, shard_index, 1]).random(n) < p.val_fraction).astype(
            np.uint8
        )
    else:
        split = np.zeros(n, dtype=np.uint8)
    out: dict[str, Decomposition] = {}
    for code, name in enumerate(SPLITS):
        sel = split == code
        rng = np.random.default_rng([p.seed, shard_index, 2, code])
        out[name] = decompose_corpus(
            starts[sel], lengths[sel], p.min_len, p.max_len, p.long_docs, rng
        )
    return split, out


def _write_tails(
    root: Path,
    name: str,
    index: int,
    code: int,
    d: Decomposition,
    p: IndexParams,
    rec: dict[str, Any],
) -> None:
    """Pack split ``code``'s tail pieces and move their targets from dropped to kept."""
    sname = SPLITS[code]
    rng = np.random.default_rng([p.seed, index, 3, code])
    t = pack_tails(d.tail_starts, d.tail_targets, p.tail_length, rng)
    files = {
        kind: write_npy_atomic(root, tail_file(name, sname, kind), arr)
        for kind, arr in (("starts", t.starts), ("targets", t.targets))
    }
    rec.setdefault("tails", {})[sname] = {
        "rows": t.rows,
        "pieces": t.pieces,
        "padding": t.padding,
        "entries": int(t.starts.size),
        **files,
    }
    s = rec["splits"][sname]
    assert t.data_targets == s["tail_tokens"] + s["short_document_tokens"] - s["short_documents"]
    s["kept_targets"] += t.data_targets
    s.update(short_documents=0, short_document_tokens=0, tail_tokens=0)
    s.update(
        tail_rows=t.rows, tail_pieces=t.pieces, tail_targets=t.data_targets, tail_padding=t.padding
    )


def done_path(root: Path, index: int) -> Path:
    return root / SHARD_DIR / f"{shard_name(index)}.done.json"


def load_done(root: Path, index: int) -> dict[str, Any] | None:
    """The finished shard's record, or None when it is missing or its files do not match.

    A kept shard's files must match their record's size and sha256: a file damaged since it was
    written (a flipped bit, an edit) would otherwise go into the manifest under the record's
    checksum. Hashing reads the kept files once (~1.4 GB/s per core), only on a resumed run.
    """
    path = done_path(root, index)
    if not path.is_file():
        return None
    try:
        rec = read_json(path)
        files = shard_files(rec)
        for f in files:
            p = root / f["path"]
            if not p.is_file() or p.stat().st_size != f["bytes"] or sha256_file(p) != f["sha256"]:
                return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # unreadable or not a record this version wrote: redo the shard
    if not isinstance(rec, dict) or rec.get("index") != index or not files:
        return None
    return rec


def write_shard(
    root: Path,
    index: int,
    tokens: np.ndarray,
    fence: np.ndarray,
    p: IndexParams,
    extra: dict[str, Any] | None = None,
    in_place_offset: int | None = None,
    in_place_file: int | None = None,
) -> dict[str, Any]:
    """Index ``tokens`` (documents at ``fence``) and write the shard's files; return its record.

    With ``in_place_offset`` (``--in-place``) the tokens are not written: the record names their
    byte offset in the input file and their sha256, which ``verify`` checks there, and with
    ``in_place_file`` (several files in place) that file's index in ``tokens_files``."""
    name = shard_name(index)
    split, dec = build_index(fence, index, p)
    rel = f"{SHARD_DIR}/{name}.tokens.bin"
    if in_place_offset is None:
        tok_rec = write_bytes_atomic(root, rel, [tokens])
    else:
        sha = hashlib.sha256(np.ascontiguousarray(tokens).data).hexdigest()
        tok_rec = {**file_record(rel, int(tokens.nbytes), sha), "offset": in_place_offset}
        if in_place_file is not None:
            tok_rec["file"] = in_place_file
    rec: dict[str, Any] = {
        "index": index,
        "name": name,
        "documents": int(fence.size - 1),
        "tokens": int(tokens.size),
        "files": {
            "tokens": tok_rec,
            "docs": write_npy_atomic(root, f"{SHARD_DIR}/{name}.docs.npy", fence),
            "split": write_npy_atomic(root, f"{SHARD_DIR}/{name}.split.npy", split),
        },
        "buckets": {},
        "splits": {},
    }
    lengths = np.diff(fence)
    for code, sname in enumerate(SPLITS):
        d = dec[sname]
        sel = split == code
        rec["buckets"][sname] = {}
        for L, starts in d.buckets.items():
            if starts.size:
                f = write_npy_atomic(root, bucket_file(name, sname, L), starts)
                rec["buckets"][sname][str(L)] = {**f, "rows": int(starts.size)}
        rec["splits"][sname] = {
            "documents": int(sel.sum()),
            "tokens": int(lengths[sel].sum()),
            "short_documents": d.short_documents,
            "short_document_tokens": d.short_document_tokens,
            "tail_tokens": d.tail_tokens,
            "kept_targets": d.kept_targets,
        }
        if p.tails == "pack":
            _write_tails(root, name, index, code, d, p, rec)
    if extra:
        rec.update(extra)
    write_json_atomic(done_path(root, index), rec)
    return rec
