"""The on-disk format: file names, the format version, the manifest, its fingerprint and checks.

A prepared dataset is one directory::

    DIR/manifest.json                 written last; format name + version, config, counts, files
    DIR/tokenizer.json                the tokenizer used (copied or trained): DIR is self-contained
    DIR/shards/00000.tokens.bin       the shard's documents concatenated, raw uint16/uint32
    DIR/shards/00000.docs.npy         int64 [n_docs + 1] document start offsets (fenceposts)
    DIR/shards/00000.split.npy        uint8 [n_docs]: 0 = train, 1 = held-out validation
    DIR/shards/00000.train.L00256.npy int64 row start offsets of bucket L = 256 (rows are
                                      tokens[s : s + L + 1]; no token is copied into a bucket)
    DIR/shards/00000.train.tail.starts.npy   ``--tails pack`` only: the tail rows' pieces
    DIR/shards/00000.train.tail.targets.npy  (int64; :mod:`ddecomp.data.tailrows`)
    DIR/shards/00000.done.json        the shard's record; its presence marks the shard finished

The manifest's ``tails`` is ``{"policy": "drop"}`` (format version 1, as before: one without
``tails`` reads as ``drop``) or ``{"policy": "pack", "length": T}`` (version 2). A dataset that
indexes several files in place (``tokens_files``, :mod:`ddecomp.data.tokenfile`) is version 3.

Every file is written through :mod:`ddecomp.io` (temporary name + rename, sha256 computed as the
bytes are written). The manifest's ``fingerprint`` is the sha256 of its canonical JSON
without the fingerprint itself and the creation time: two preparations with the same inputs and
arguments have the same fingerprint, whatever the number of workers.

A manifest is trusted only after :func:`check_manifest` (every field a reader relies on has its
type and range; every file path is the one name the format gives that file, so no path can leave
the directory) and :func:`check_files` (each file is a regular file inside DIR, a symlink only if
it resolves inside DIR, with its recorded size: one ``lstat`` per file, nothing read).
``.npy`` files are read through :func:`read_npy`, which checks the header against the file size
and the manifest before allocating anything.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from ddecomp.data.tailrows import TAIL_KINDS, check_shard_tails, check_tail_bucket, check_tails
from ddecomp.data.tokenfile import check_in_place
from ddecomp.decompose import MAX_LEN_LIMIT, is_power_of_two
from ddecomp.errors import DataError, UserError
from ddecomp.io import SHA256_HEX, canonical_sha256, read_json

FORMAT_NAME = "ddecomp"
FORMAT_VERSION = 1
# A dataset with packed tail rows is version 2: an older ddecomp refuses it with its "format version
# 2 is not supported" line instead of training on its plain rows only; --tails drop stays 1.
TAILS_FORMAT_VERSION = 2
# A dataset indexing several files in place (``tokens_files``) is version 3, whatever its tails:
# an older ddecomp says "format version 3 is not supported", not that the manifest is damaged.
MULTIFILE_FORMAT_VERSION = 3
READ_VERSIONS = (FORMAT_VERSION, TAILS_FORMAT_VERSION, MULTIFILE_FORMAT_VERSION)
MANIFEST = "manifest.json"
TOKENIZER_FILE = "tokenizer.json"
SHARD_DIR = "shards"
SPLITS = ("train", "val")
TOKEN_DTYPES = ("uint16", "uint32")
_VOLATILE_KEYS = ("fingerprint", "created", "elapsed_s", "prepare")
# A shard's three fixed files, by their key in the shard record's "files".
_SHARD_FILES = {"tokens": "tokens.bin", "docs": "docs.npy", "split": "split.npy"}
_COUNT_LIMIT = 1 << 62  # any count or size above this is a forgery, not a dataset


def shard_name(index: int) -> str:
    return f"{index:05d}"


def shard_file(shard: str, kind: str) -> str:
    """``shards/NNNNN.tokens.bin`` (kind ``tokens``), ``.docs.npy`` (``docs``), ``.split.npy``."""
    return f"{SHARD_DIR}/{shard}.{_SHARD_FILES[kind]}"


def bucket_file(shard: str, split: str, L: int) -> str:
    return f"{SHARD_DIR}/{shard}.{split}.L{L:05d}.npy"


def shard_files(shard: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every file record (``path``, ``bytes``, ``sha256``) of a shard record, as the manifest and
    ``NNNNN.done.json`` hold it: tokens, document index, split, each split's buckets, then (with
    ``--tails pack``) each split's tail files.

    A token record with an ``offset`` is a range of the manifest's ``tokens_file`` (prepared
    ``--in-place``), not a file of the dataset: it is not listed."""
    files = [shard["files"][kind] for kind in _SHARD_FILES]
    if "offset" in files[0]:
        files = files[1:]
    for split in SPLITS:
        files.extend(shard["buckets"][split].values())
    for split in SPLITS:
        if "tails" in shard:
            files.extend(shard["tails"][split][kind] for kind in TAIL_KINDS)
    return files


def fingerprint(manifest: dict[str, Any]) -> str:
    """sha256 of the manifest's canonical JSON, without fields that vary between equal runs
    and without the token files' ``chunks`` (digests an upload adds, :mod:`ddecomp.data.chunks`):
    a dataset prepared to a URL has the fingerprint of the same dataset prepared locally."""
    body = {k: v for k, v in manifest.items() if k not in _VOLATILE_KEYS}
    shards = body.get("shards")
    if isinstance(shards, list) and any(_chunked(sh) for sh in shards):
        body["shards"] = [_unchunked(sh) if _chunked(sh) else sh for sh in shards]
    return canonical_sha256(body)


def _chunked(sh: Any) -> bool:
    files = sh.get("files") if isinstance(sh, dict) else None
    tok = files.get("tokens") if isinstance(files, dict) else None
    return isinstance(tok, dict) and "chunks" in tok


def _unchunked(sh: dict[str, Any]) -> dict[str, Any]:
    tok = {k: v for k, v in sh["files"]["tokens"].items() if k != "chunks"}
    return {**sh, "files": {**sh["files"], "tokens": tok}}


# JSON's names for the Python types json.load returns: the manifest is JSON to whoever edits it.
_JSON_TYPES = {
    dict: "an object",
    list: "a list",
    str: "a string",
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    type(None): "null",
}


def _describe(v: Any) -> str:
    """``a string ('1')``: the JSON type of ``v`` and a short repr."""
    kind = _JSON_TYPES.get(type(v), type(v).__name__)
    if v is None:
        return kind
    r = json.dumps(v) if isinstance(v, bool) else repr(v)
    return f"{kind} ({r if len(r) <= 40 else r[:37] + '...'})"


def _printable(text: str, limit: int) -> str:
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def load_manifest(root: Path) -> dict[str, Any]:
    """Read ``root/manifest.json``; a user error if missing, foreign or of another version."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        hint = " (an interrupted prepare? rerun it)" if (Path(root) / SHARD_DIR).is_dir() else ""
        raise UserError(f"{root}: no {MANIFEST}, not a prepared ddecomp dataset{hint}")
    try:
        man = read_json(path)
    except (OSError, ValueError, RecursionError) as e:
        msg = " ".join(str(e).split())
        raise UserError(f"{path}: unreadable manifest ({msg}); run `ddecomp prepare` again") from e
    if not isinstance(man, dict):
        raise UserError(f"{path}: not a ddecomp manifest (it is {_describe(man)})")
    if man.get("format") != FORMAT_NAME:
        raise UserError(f"{path}: not a ddecomp manifest (format={man.get('format')!r})")
    ver = man.get("version")
    if type(ver) is not int:  # a bool is an int to Python, and True == 1
        raise UserError(
            f"{path}: version is {_describe(ver)}, expected the integer {FORMAT_VERSION}; the "
            "manifest is damaged, prepare the data again"
        )
    if ver not in READ_VERSIONS:
        raise UserError(
            f"{path}: format version {ver} is not supported by this ddecomp (reads versions "
            f"{', '.join(map(str, READ_VERSIONS))}); prepare the data again or use a matching "
            "ddecomp"
        )
    return man


def format_version(man: Mapping[str, Any], pack: bool) -> int:
    """The version a manifest must carry: the oldest reader that reads all of it correctly."""
    if "tokens_files" in man:
        return MULTIFILE_FORMAT_VERSION
    return TAILS_FORMAT_VERSION if pack else FORMAT_VERSION


# ---- the manifest's shape ---------------------------------------------------------------------
class _Fields:
    """Typed reads of manifest fields; the first wrong one raises :class:`DataError` naming it
    by its path in the manifest (``shards[3].files.tokens.bytes``)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, at: str, problem: str) -> NoReturn:
        # Keys are the editor's text: escaped (a newline in a key must not break the one line)
        # and cut short (a 5000-digit bucket key).
        at, problem = _printable(at, 120), _printable(problem, 200)
        raise DataError(f"{self.path}: {at} {problem}; the manifest is damaged or was edited")

    def get(self, node: Mapping[str, Any], key: str, at: str, kind: type) -> Any:
        name = f"{at}.{key}" if at else key
        if key not in node:
            self.fail(name, "is missing")
        v = node[key]
        if kind is int and type(v) is not int:  # bool excluded
            self.fail(name, f"is {_describe(v)}, expected an integer")
        if not isinstance(v, kind):
            self.fail(name, f"is {_describe(v)}, expected {_JSON_TYPES[kind]}")
        return v

    def mapping(self, node: Mapping[str, Any], key: str, at: str = "") -> dict[str, Any]:
        d: dict[str, Any] = self.get(node, key, at, dict)
        return d

    def integer(
        self, node: Mapping[str, Any], key: str, at: str = "", lo: int = 0, hi: int = _COUNT_LIMIT
    ) -> int:
        v: int = self.get(node, key, at, int)
        if not lo <= v <= hi:
            self.fail(f"{at}.{key}" if at else key, f"= {v} is outside [{lo}, {hi}]")
        return v

    def keys(self, node: Mapping[str, Any], want: Any, at: str) -> None:
        if set(node) != set(want):
            self.fail(at, f"has keys {sorted(node)}, expected {sorted(want)}")

    def record(self, node: Mapping[str, Any], key: str, at: str, path: str) -> dict[str, Any]:
        """A file record: its path must be exactly ``path`` (the format's name for it)."""
        rec = self.mapping(node, key, at)
        at = f"{at}.{key}"
        got = self.get(rec, "path", at, str)
        if got != path:
            self.fail(f"{at}.path", f"is {got!r}, expected {path!r} (a file inside the dataset)")
        self.integer(rec, "bytes", at)
        if not SHA256_HEX.fullmatch(self.get(rec, "sha256", at, str)):
            self.fail(f"{at}.sha256", "is not a sha256 hex digest")
        return rec


def bucket_length(key: str, min_len: int, max_len: int) -> int | None:
    """The length a bucket key names (``"256"``), or None unless it is a power of two in range
    written as ``str(L)``."""
    if not key.isdecimal() or len(key) > 7 or key != str(int(key)):  # 2^20 has 7 digits
        return None
    L = int(key)
    return L if is_power_of_two(L) and min_len <= L <= max_len else None


def check_manifest(man: dict[str, Any], path: Path) -> None:
    """Check every field a reader relies on: types, ranges, names (no I/O).

    Lengths are powers of two in ``[1, 2^20]``, ``dtype`` is uint16 or uint32, EOS and BOS are
    ids below ``vocab_size`` that the dtype holds, shard ``i`` is named ``shard_name(i)`` (so no
    shard is listed twice), each shard's token count matches its token file's size, every file
    path is the format's name for that file, and the split totals read by ``stats`` and
    ``verify`` are integers. Raises :class:`DataError` on the first problem.
    """
    f = _Fields(path)
    f.get(man, "fingerprint", "", str)
    min_len = f.integer(man, "min_len", lo=1, hi=MAX_LEN_LIMIT)
    max_len = f.integer(man, "max_len", lo=1, hi=MAX_LEN_LIMIT)
    for key, v in (("min_len", min_len), ("max_len", max_len)):
        if not is_power_of_two(v):
            f.fail(key, f"= {v} is not a power of two")
    if min_len > max_len:
        f.fail("min_len", f"= {min_len} is above max_len = {max_len}")
    dtype = f.get(man, "dtype", "", str)
    if dtype not in TOKEN_DTYPES:
        f.fail("dtype", f"= {dtype!r} is not one of {', '.join(TOKEN_DTYPES)}")
    itemsize = np.dtype(dtype).itemsize
    tok = f.mapping(man, "tokenizer")
    vocab = f.integer(tok, "vocab_size", "tokenizer", lo=1, hi=1 << 32)
    top = min(vocab, 1 << (8 * itemsize)) - 1  # the largest id the vocabulary and dtype allow
    f.integer(tok, "eos_id", "tokenizer", hi=top)
    if tok.get("bos_id") is not None:
        f.integer(tok, "bos_id", "tokenizer", hi=top)
    if tok.get("file") is not None:
        if tok["file"] != TOKENIZER_FILE:
            f.fail("tokenizer.file", f"is {tok['file']!r}, expected {TOKENIZER_FILE!r} or null")
        if not SHA256_HEX.fullmatch(f.get(tok, "sha256", "tokenizer", str)):
            f.fail("tokenizer.sha256", "is not a sha256 hex digest")
    f.mapping(man, "convention")
    tail_len = check_tails(f, man, min_len)
    if man["version"] != format_version(man, tail_len is not None):
        f.fail(
            "version",
            f"= {man['version']} does not match the tails policy and token files (several "
            f"files in place: version {MULTIFILE_FORMAT_VERSION}, else pack: "
            f"{TAILS_FORMAT_VERSION}, drop: {FORMAT_VERSION})",
        )
    splits = f.mapping(man, "splits")
    f.keys(splits, SPLITS, "splits")
    for name in SPLITS:
        rec = f.mapping(splits, name, "splits")
        _check_split(f, rec, f"splits.{name}", min_len, max_len)
        check_tail_bucket(f, rec, f"splits.{name}", tail_len)
    skipped = f.mapping(
        f.mapping(f.mapping(man, "dropped"), "ingest", "dropped"), "skipped", "dropped.ingest"
    )
    for key in skipped:
        f.integer(skipped, key, "dropped.ingest.skipped")
    totals = f.mapping(man, "totals")
    for key in ("shards", "documents", "tokens", "kept_targets"):
        f.integer(totals, key, "totals")
    shards = f.get(man, "shards", "", list)
    tf_bytes = check_in_place(f, man)
    if "sources" in man:  # --source-per-input: one source per shard (data/sources.py)
        src = f.mapping(man, "sources")
        names, per = f.get(src, "names", "sources", list), f.get(src, "shards", "sources", list)
        if not names or not all(isinstance(n, str) for n in names) or len(per) != len(shards):
            f.fail("sources", "needs names (strings) and one source index per shard")
        if not all(type(s) is int and 0 <= s < len(names) for s in per):
            f.fail("sources.shards", f"holds an index outside 0..{len(names) - 1}")
    for i, sh in enumerate(shards):
        at = f"shards[{i}]"
        if not isinstance(sh, dict):
            f.fail(at, f"is {_describe(sh)}, expected an object")
        if f.integer(sh, "index", at) != i or f.get(sh, "name", at, str) != shard_name(i):
            f.fail(
                at,
                f"is shard {sh['index']} {sh['name']!r}, expected {i} {shard_name(i)!r} "
                "(shards are listed once each, in order)",
            )
        f.integer(sh, "documents", at)
        n_tokens = f.integer(sh, "tokens", at)
        files = f.mapping(sh, "files", at)
        f.keys(files, _SHARD_FILES, f"{at}.files")
        for kind in _SHARD_FILES:
            f.record(files, kind, f"{at}.files", shard_file(shard_name(i), kind))
        if "offset" in files["tokens"]:
            if not tf_bytes:
                f.fail(f"{at}.files.tokens.offset", "is set, but the manifest has no tokens_file")
            k = 0
            if "file" in files["tokens"] or "tokens_files" in man:
                k = f.integer(files["tokens"], "file", f"{at}.files.tokens", hi=len(tf_bytes) - 1)
            off = f.integer(files["tokens"], "offset", f"{at}.files.tokens")
            if off + files["tokens"]["bytes"] > tf_bytes[k]:
                f.fail(f"{at}.files.tokens.offset", f"= {off} reaches past its token file's end")
        elif "file" in files["tokens"]:
            f.fail(f"{at}.files.tokens.file", "is set without an offset (not an in-place range)")
        if files["tokens"]["bytes"] != n_tokens * itemsize:
            f.fail(
                f"{at}.tokens",
                f"= {n_tokens} does not match its token file's "
                f"{files['tokens']['bytes']} bytes of {dtype}",
            )
        buckets = f.mapping(sh, "buckets", at)
        f.keys(buckets, SPLITS, f"{at}.buckets")
        for split in SPLITS:
            b_at = f"{at}.buckets.{split}"
            for key in f.mapping(buckets, split, f"{at}.buckets"):
                L = bucket_length(key, min_len, max_len)
                if L is None:
                    f.fail(
                        f"{b_at}.{key}",
                        f"is not a bucket length (powers of two in [{min_len}, {max_len}])",
                    )
                rec = f.record(buckets[split], key, b_at, bucket_file(shard_name(i), split, L))
                f.integer(rec, "rows", f"{b_at}.{key}")
        check_shard_tails(f, sh, at, shard_name(i), tail_len)


def _check_split(f: _Fields, rec: dict[str, Any], at: str, min_len: int, max_len: int) -> None:
    for key in ("documents", "tokens", "targets", "kept_targets"):
        f.integer(rec, key, at)
    buckets = f.mapping(rec, "buckets", at)
    for key in buckets:
        if bucket_length(key, min_len, max_len) is None:
            f.fail(f"{at}.buckets.{key}", "is not a bucket length")
        b = f.mapping(buckets, key, f"{at}.buckets")
        f.integer(b, "rows", f"{at}.buckets.{key}")
        f.integer(b, "tokens", f"{at}.buckets.{key}")
    dropped = f.mapping(rec, "dropped", at)
    f.integer(
        f.mapping(dropped, "document_shorter_than_min", f"{at}.dropped"),
        "documents",
        f"{at}.dropped.document_shorter_than_min",
    )
    f.mapping(dropped, "tail_below_min", f"{at}.dropped")
    for key in dropped:
        reason = f.mapping(dropped, key, f"{at}.dropped")
        f.integer(reason, "tokens", f"{at}.dropped.{key}")
        if "documents" in reason:
            f.integer(reason, "documents", f"{at}.dropped.{key}")
