"""``verify``: check a prepared dataset against its manifest and the format's invariants.

In order, stopping at the first problem (raised as :class:`~ddecomp.errors.DataError` naming the
file and what is wrong):

1. the manifest's fingerprint matches its content, and its fields have the types, ranges and
   file names the format gives them (:func:`~ddecomp.data.layout.check_manifest`, also run by
   ``open_dataset``: a manifest edited with its fingerprint recomputed is caught here);
2. every file is a regular file inside the directory with its recorded size (all of them before
   any is hashed), then its sha256 matches the manifest; ``.npy`` headers are checked against
   the sizes before any array is allocated;
3. per shard: document fenceposts increase from 0 to the token count; the split array has one
   entry (0 or 1) per document; every token id is below the tokenizer's ``vocab_size``; every
   row ``[s, s + L]`` lies inside one document of the bucket's split; rows of a split, sorted by
   start, never share a target (``start[i+1] >= start[i] + L[i]``); row counts match the records;
   with ``--tails pack``, tail rows hold exactly their length (:func:`~ddecomp.data.tailrows.
   check_rows`), each piece lies in one document of its split, and the pieces and the rows
   together never share a target: every target is trained at most once, and the totals below
   make it exactly once;
4. totals: per split, documents, tokens and bucket rows add up to what the manifest says, the
   buckets' tokens to ``kept_targets``, and every dropped token is accounted
   (``targets = kept + tail + short-document targets``); the corpus totals add up the splits.

Cost: one sha256 pass over every byte (~1.5 GB/s on this machine), one max over the tokens (a
fraction of that) plus O(rows + documents) numpy work.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from ddecomp.data.files import check_files, read_npy, stat_inside
from ddecomp.data.layout import (
    MANIFEST,
    SPLITS,
    check_manifest,
    fingerprint,
    load_manifest,
    shard_files,
)
from ddecomp.data.tailrows import PAD_START, check_rows, tail_file, tail_policy
from ddecomp.data.tokenfile import shard_file_ref, token_array
from ddecomp.errors import DataError
from ddecomp.io import sha256_file


def _check_sha(root: Path, rec: dict[str, Any]) -> None:
    if sha256_file(root / rec["path"]) != rec["sha256"]:
        raise DataError(
            f"{root / rec['path']}: sha256 differs from the manifest (file modified or corrupt)"
        )


def _check_ids(path: Path, tokens: np.ndarray, vocab_size: int) -> None:
    """Every id below ``vocab_size`` (an embedding table of that size is indexed by them)."""
    if tokens.size == 0 or vocab_size > int(np.iinfo(tokens.dtype).max):
        return  # empty, or no id of this dtype can reach the vocabulary's end
    if int(tokens.max()) >= vocab_size:
        i = int(np.flatnonzero(tokens >= vocab_size)[0])
        raise DataError(
            f"{path}: token {i} is id {int(tokens[i])}, not below the tokenizer's vocab_size "
            f"{vocab_size}"
        )


def _check_shard(root: Path, man: dict[str, Any], sh: dict[str, Any]) -> dict[str, list[int]]:
    """Invariants of one shard; per split ``[documents, tokens, kept targets]`` and bucket rows."""
    files = sh["files"]
    n_tokens = sh["tokens"]
    where = root / files["docs"]["path"]
    fence = read_npy(where, "int64", sh["documents"] + 1)
    split = read_npy(root / files["split"]["path"], "uint8", sh["documents"])
    if fence[0] != 0 or fence[-1] != n_tokens:
        raise DataError(f"{where}: document index does not span the {n_tokens} shard tokens")
    if fence.size > 1 and int(np.diff(fence).min()) < 1:
        raise DataError(f"{where}: document offsets do not increase")
    if split.size and int(split.max()) > 1:
        raise DataError(f"{root / files['split']['path']}: a split code other than 0 and 1")
    if n_tokens:
        tokens = token_array(root, man, sh)
        if "offset" in files["tokens"]:  # --in-place: a range of the token file, hashed here
            ref = shard_file_ref(man, sh)
            assert ref is not None, "an offset names an in-place file (check_manifest)"
            where = Path(ref["path"])
            if hashlib.sha256(tokens.data).hexdigest() != files["tokens"]["sha256"]:
                raise DataError(
                    f"{where}: tokens [{files['tokens']['offset']}, ...) of shard "
                    f"{sh['name']} differ from the indexed ones (the file changed); "
                    "prepare again"
                )
        else:
            where = root / files["tokens"]["path"]
        _check_ids(where, tokens, man["tokenizer"]["vocab_size"])
    lengths = np.diff(fence)
    out: dict[str, list[int]] = {}
    for code, sname in enumerate(SPLITS):
        all_s, all_l = [], []
        for key, rec in sh["buckets"][sname].items():
            L = int(key)  # check_manifest: a power of two in [min_len, max_len]
            path = root / rec["path"]
            starts = read_npy(path, "int64", rec["rows"])
            doc = np.searchsorted(fence, starts, side="right") - 1
            bad = (starts < 0) | (doc >= sh["documents"])
            if not bad.any():
                bad = (starts + L + 1 > fence[doc + 1]) | (split[doc] != code)
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise DataError(
                    f"{path}: row {i} (start {int(starts[i])}, {L} targets) is not inside one "
                    f"{sname} document"
                )
            all_s.append(starts)
            all_l.append(np.full(starts.size, L, dtype=np.int64))
        tail_len = tail_policy(man)[1]
        if tail_len is not None:
            ts, tl = _tail_pieces(root, sh, sname, tail_len, fence, split, code)
            all_s.append(ts)
            all_l.append(tl)
        kept = 0
        if all_s:
            s = np.concatenate(all_s)
            ln = np.concatenate(all_l)
            order = np.argsort(s, kind="stable")
            s, ln = s[order], ln[order]
            if s.size > 1 and bool((s[1:] < s[:-1] + ln[:-1]).any()):
                raise DataError(
                    f"{root / 'shards'}/{sh['name']}.*: two {sname} rows share a target"
                )
            kept = int(ln.sum())
        sel = split == code
        out[sname] = [int(sel.sum()), int(lengths[sel].sum()), kept]
    return out


def _tail_pieces(
    root: Path,
    sh: dict[str, Any],
    sname: str,
    length: int,
    fence: np.ndarray,
    split: np.ndarray,
    code: int,
) -> tuple[np.ndarray, np.ndarray]:
    """A split's tail pieces (padding left out), checked: whole rows, inside one document."""
    rec = sh["tails"][sname]
    path = root / tail_file(sh["name"], sname, "starts")
    starts, targets = (
        read_npy(root / rec[k]["path"], "int64", rec["entries"]) for k in ("starts", "targets")
    )
    problem = check_rows(starts, targets, length)
    real = starts != PAD_START
    s, t = starts[real], targets[real]
    if problem is None and (s.size, int(targets.sum())) != (rec["pieces"], rec["rows"] * length):
        problem = f"{s.size} pieces in {int(targets.sum()) // length} rows, the manifest says "
        problem += f"{rec['pieces']} in {rec['rows']}"
    pad = int(targets[~real].sum())
    if problem is None and pad != rec["padding"]:
        problem = f"{pad} padding positions, the manifest says {rec['padding']}"
    if problem is None and s.size:
        doc = np.searchsorted(fence, s, side="right") - 1
        bad = (doc >= sh["documents"]) | (s + t + 1 > fence[np.minimum(doc + 1, fence.size - 1)])
        if not bad.any():
            bad = split[doc] != code
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            problem = f"piece {i} (start {int(s[i])}, {int(t[i])} targets) is not inside one "
            problem += f"{sname} document"
    if problem is not None:
        raise DataError(f"{path}: {problem}")
    return s, t


def _check_totals(root: Path, man: dict[str, Any], got: dict[str, list[int]]) -> None:
    where = root / MANIFEST
    for sname in SPLITS:
        tot = man["splits"][sname]
        docs, tokens, kept = got[sname]
        if (docs, tokens) != (tot["documents"], tot["tokens"]):
            raise DataError(
                f"{where}: {sname} shards hold {docs} documents of {tokens} tokens, manifest "
                f"says {tot['documents']} of {tot['tokens']}"
            )
        if kept != tot["kept_targets"]:
            raise DataError(
                f"{where}: {sname} buckets hold {kept} targets, manifest says {tot['kept_targets']}"
            )
        rows: dict[str, int] = {}
        tail = {"rows": 0, "pieces": 0, "padding": 0}
        for sh in man["shards"]:
            for key, rec in sh["buckets"][sname].items():
                rows[key] = rows.get(key, 0) + rec["rows"]
            for key in tail if "tails" in sh else ():
                tail[key] += sh["tails"][sname][key]
        if "tail_bucket" in tot:
            tb = tot["tail_bucket"]
            in_rows = sum(b["tokens"] for b in tot["buckets"].values())
            want = {**tail, "targets": tot["kept_targets"] - in_rows}
            got_tail = {k: tb[k] for k in want}
            if got_tail != want or tb["rows"] * tb["length"] != tb["targets"] + tb["padding"]:
                raise DataError(
                    f"{where}: splits.{sname}.tail_bucket {got_tail} differs from "
                    f"the shards' tail rows {want}"
                )
        summary = {k: (b["rows"], b["tokens"]) for k, b in tot["buckets"].items()}
        if summary != {k: (n, n * int(k)) for k, n in rows.items() if n}:
            raise DataError(f"{where}: splits.{sname}.buckets differs from the shards' buckets")
        d = tot["dropped"]
        short = d["document_shorter_than_min"]
        accounted = (
            tot["kept_targets"]
            + d["tail_below_min"]["tokens"]
            + short["tokens"]
            - short["documents"]
        )
        if tot["targets"] != accounted or tot["tokens"] != tot["targets"] + tot["documents"]:
            raise DataError(f"{where}: {sname} token accounting does not add up")
    totals = man["totals"]
    want = {"shards": len(man["shards"])}
    for key in ("documents", "tokens", "kept_targets"):
        want[key] = sum(man["splits"][s][key] for s in SPLITS)
    if {k: totals[k] for k in want} != want:
        raise DataError(f"{where}: totals {totals} do not add up the splits {want}")


def verify_dataset(root: str | Path, cache_dir: str | Path | None = None) -> dict[str, Any]:
    """Check everything; return a small summary, raise :class:`DataError` on the first problem.

    A URL is checked through its local copy (:func:`~ddecomp.data.remote.cache_dataset`: each
    file's sha256 checked as it is fetched), which is then verified like a directory."""
    from ddecomp.data.remote import cache_dataset, is_url

    if is_url(root):
        root = cache_dataset(root, cache_dir)
    root = Path(root)
    man = load_manifest(root)
    if fingerprint(man) != man.get("fingerprint"):
        raise DataError(f"{root / MANIFEST}: fingerprint does not match the manifest's content")
    check_manifest(man, root / MANIFEST)
    n_files = 1 + check_files(root, man)  # the manifest, then every shard file's size
    tok = man["tokenizer"]
    if tok.get("file"):
        stat_inside(root, tok["file"])
        if sha256_file(root / tok["file"]) != tok["sha256"]:
            raise DataError(
                f"{root / tok['file']}: sha256 differs from the manifest (tokenizer modified)"
            )
    got = {s: [0, 0, 0] for s in SPLITS}
    for sh in man["shards"]:
        for rec in shard_files(sh):
            _check_sha(root, rec)
        for sname, counts in _check_shard(root, man, sh).items():
            got[sname] = [a + b for a, b in zip(got[sname], counts, strict=True)]
    _check_totals(root, man, got)
    kept = {s: got[s][2] for s in SPLITS}
    return {"files": n_files, "shards": len(man["shards"]), "kept_targets": kept}
