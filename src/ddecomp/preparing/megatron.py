"""``prepare --from-megatron PREFIX ...``: Megatron indexed datasets, copied or indexed in place.

A Megatron dataset (written by Megatron-LM's ``preprocess_data.py``, NeMo and GPT-NeoX tooling)
is ``PREFIX.bin``, the tokens of every sequence back to back, and ``PREFIX.idx``:

====================  =========================================================================
bytes                 field
====================  =========================================================================
9                     magic ``MMIDIDX\\x00\\x00``
8 (``<Q``)            version, 1
1 (``<B``)            dtype code: 1 uint8, 2 int8, 3 int16, 4 int32, 5 int64, 6 float64,
                      7 float32, 8 uint16
8 (``<Q``)            ``S``, the number of sequences
8 (``<Q``)            ``D``, the number of document indices (documents + 1)
4 S (int32)           each sequence's length in tokens
8 S (int64)           each sequence's byte offset in the ``.bin``
8 D (int64)           document ``i`` is sequences ``[doc[i], doc[i + 1])`` (``doc[0] = 0``)
====================  =========================================================================

(a multimodal index adds one int8 mode per sequence; it is refused). A document may span several
sequences, and may be empty. This reader is ddecomp's own: every count is checked against the
file's size before anything is read, sequences must lie back to back from byte 0 (as Megatron
writes them) and the ``.bin`` must hold exactly the tokens the ``.idx`` counts, so a truncated or
malformed pair is one line naming the file. Documents come from the ``.idx``: no EOS scan.

Copied, each document that does not end with ``--eos-id`` gets it appended (an empty one becomes
``[EOS]``), so the dataset equals the same documents given to ``--from-tokens`` as a flat file
with EOS after each. ``--in-place`` indexes the ``.bin`` where it is (uint16, or int32 read as
uint32 once no id is negative), records it as ``--from-tokens --in-place`` does (path, size,
``mtime_ns``, inode, per-shard sha256) and needs every non-empty document to end with EOS (a
file cannot grow); empty documents are skipped and counted. Several prefixes are several document
streams of one dataset, copied or in place (the manifest's ``tokens_files`` then names each
``.bin``, and each shard's token record its ``file``; the ``.bin`` files must share one token
dtype); the same ``.bin`` given twice (or through a link) is refused; with
``source_per_input`` (``--source-per-input``) each prefix is a source the batches name
(:mod:`ddecomp.data.sources`).
"""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ddecomp.dirlock import DirLock
from ddecomp.errors import UserError
from ddecomp.io import canonical_sha256
from ddecomp.preparing.config import MegatronConfig
from ddecomp.preparing.inputs import input_stamp
from ddecomp.preparing.manifest import add_inputs, build_manifest
from ddecomp.preparing.perinput import check_distinct, source_names, sources_record
from ddecomp.preparing.pretokenized import file_reference
from ddecomp.preparing.ray_engine import probe_cluster
from ddecomp.preparing.remote_out import claim_out
from ddecomp.preparing.shardrun import finish, index_identity, run_shards
from ddecomp.preparing.shards import missing_eos

log = logging.getLogger("ddecomp.preparing.pipeline")

MAGIC = b"MMIDIDX\x00\x00"
_HEADER = len(MAGIC) + 8 + 1 + 8 + 8
_DTYPES = {
    1: "uint8",
    2: "int8",
    3: "int16",
    4: "int32",
    5: "int64",
    6: "float64",
    7: "float32",
    8: "uint16",
}
_IN_PLACE = {"uint16": "uint16", "int32": "uint32"}  # the file's dtype -> the dataset's


@dataclass(frozen=True)
class MegatronIndex:
    """One prefix's ``.idx``, checked against its ``.bin``: where each document's tokens are."""

    prefix: str
    bin_path: Path
    dtype: np.dtype
    bounds: np.ndarray  # int64 token offsets, documents + 1: document i is [bounds[i], bounds[i+1])

    @property
    def documents(self) -> int:
        return int(self.bounds.size - 1)

    @property
    def tokens(self) -> int:
        return int(self.bounds[-1])


def read_index(prefix: str | Path) -> MegatronIndex:
    """Read and check ``PREFIX.idx`` against ``PREFIX.bin`` (a :class:`UserError` naming the
    file on any problem); no token is read."""
    idx, bin_path = Path(f"{prefix}.idx"), Path(f"{prefix}.bin")
    for p in (idx, bin_path):
        if not p.is_file():
            raise UserError(f"--from-megatron {prefix}: {p}: no such file")
    size = idx.stat().st_size
    with open(idx, "rb") as fh:
        head = fh.read(_HEADER)
        if len(head) < _HEADER:
            raise UserError(f"{idx}: {size} bytes, shorter than a Megatron index header")
        if head[: len(MAGIC)] != MAGIC:
            raise UserError(f"{idx}: not a Megatron index (no MMIDIDX magic)")
        version = int.from_bytes(head[9:17], "little")
        code = head[17]
        n_seq = int.from_bytes(head[18:26], "little")
        n_doc = int.from_bytes(head[26:34], "little")
        if version != 1:
            raise UserError(f"{idx}: Megatron index version {version}; ddecomp reads version 1")
        name = _DTYPES.get(code)
        if name is None or name.startswith("float"):
            raise UserError(f"{idx}: dtype code {code} ({name}) is not an integer token type")
        need = _HEADER + 12 * n_seq + 8 * n_doc
        if size == need + n_seq and n_seq:
            raise UserError(f"{idx}: a multimodal index (sequence modes); not supported")
        if size != need:
            raise UserError(
                f"{idx}: {size} bytes, its header ({n_seq} sequences, {n_doc} document indices) "
                f"needs {need}: truncated or malformed"
            )
        lengths = np.fromfile(fh, dtype="<i4", count=n_seq).astype(np.int64)
        pointers = np.fromfile(fh, dtype="<i8", count=n_seq)
        docs = np.fromfile(fh, dtype="<i8", count=n_doc)
    dtype = np.dtype(name).newbyteorder("<")
    starts = np.zeros(n_seq + 1, dtype=np.int64)
    if n_seq and int(lengths.min()) < 0:
        raise UserError(f"{idx}: a negative sequence length")
    np.cumsum(lengths, out=starts[1:])
    if not np.array_equal(pointers, starts[:-1] * dtype.itemsize):
        raise UserError(
            f"{idx}: sequence pointers are not back to back from byte 0 (not as Megatron writes "
            "them); rewrite the dataset with Megatron's builder"
        )
    if n_doc < 1 or docs[0] != 0 or docs[-1] != n_seq or bool((np.diff(docs) < 0).any()):
        raise UserError(
            f"{idx}: the document index does not rise from sequence 0 to the last ({n_seq}); "
            "every sequence must belong to a document (end_document)"
        )
    bin_size = bin_path.stat().st_size
    if bin_size != int(starts[-1]) * dtype.itemsize:
        raise UserError(
            f"{bin_path}: {bin_size} bytes, {idx} indexes {int(starts[-1]) * dtype.itemsize} "
            f"({int(starts[-1])} {name} tokens): truncated or not this index's data"
        )
    return MegatronIndex(str(prefix), bin_path, dtype, starts[docs])


def _shard_cuts(bounds: np.ndarray, shard_tokens: int) -> list[tuple[int, int]]:
    """Document ranges ``[a, b)`` of about ``shard_tokens`` tokens each, cut at documents."""
    n_docs = bounds.size - 1
    if n_docs == 0:
        return []
    marks = np.arange(shard_tokens, int(bounds[-1]), shard_tokens, dtype=np.int64)
    cuts = np.unique(np.searchsorted(bounds, marks, side="left"))
    cuts = cuts[(cuts > 0) & (cuts < n_docs)].tolist()
    edges = [0, *cuts, n_docs]
    return list(itertools.pairwise(edges))


def _id_range(ix: MegatronIndex, tokens: np.ndarray, cfg: MegatronConfig) -> int | None:
    """Refuse ids below 0 or not below ``vocab_size``; the largest id when it was read."""
    if cfg.vocab_size is None and ix.dtype.kind == "u" and ix.dtype.itemsize <= 2:
        return None  # every id fits the uint16 the dataset stores
    lo, hi = (int(tokens.min()), int(tokens.max())) if tokens.size else (0, 0)
    if lo < 0:
        raise UserError(f"{ix.bin_path}: a negative token id ({lo})")
    if hi >= 1 << 32:
        raise UserError(f"{ix.bin_path}: token id {hi} is beyond uint32")
    if cfg.vocab_size is not None and hi >= cfg.vocab_size:
        raise UserError(
            f"{ix.bin_path}: token id {hi} is not below --vocab-size {cfg.vocab_size}; pass the "
            "tokenizer's vocabulary size"
        )
    return hi


def _open(ix: MegatronIndex) -> np.ndarray:
    if ix.tokens == 0:
        return np.zeros(0, dtype=ix.dtype)
    return np.memmap(ix.bin_path, dtype=ix.dtype, mode="r", shape=(ix.tokens,))


def _in_place_refs(
    cfg: MegatronConfig, indexes: list[MegatronIndex], missing: list[np.ndarray]
) -> list[dict[str, Any]]:
    """Each ``.bin``'s in-place record; refused when it cannot be read as the dataset's one
    token dtype or a document lacks the EOS a file cannot grow."""
    refs: list[dict[str, Any]] = []
    for ix, miss in zip(indexes, missing, strict=True):
        out_dtype = _IN_PLACE.get(ix.dtype.name)
        if out_dtype is None:
            raise UserError(
                f"{ix.bin_path}: --in-place reads uint16 or int32 tokens, this file holds "
                f"{ix.dtype.name}: drop --in-place to copy it"
            )
        if refs and out_dtype != refs[0]["dtype"]:
            raise UserError(
                f"{ix.bin_path}: {ix.dtype.name} tokens, {indexes[0].bin_path} "
                f"{indexes[0].dtype.name}: --in-place reads every file as the dataset's one "
                "dtype; drop --in-place to copy them (converted), or prepare each in place into "
                "its own DIR and blend them"
            )
        without = int(miss.sum()) - int((np.diff(ix.bounds) == 0).sum())
        if without:
            raise UserError(
                f"{ix.bin_path}: {without} of {ix.documents} documents do not end with --eos-id "
                f"{cfg.eos_id}, which --in-place cannot append: drop --in-place to copy them "
                "(or preprocess with Megatron's --append-eod)"
            )
        refs.append({**file_reference(ix.bin_path, 0, out_dtype), "source_dtype": ix.dtype.name})
    return refs


def prepare_megatron(cfg: MegatronConfig) -> dict[str, Any]:
    """Prepare Megatron indexed datasets (``cfg.prefixes``) into ``cfg.out``; return the manifest.

    The dataset stores uint16 when every id (EOS included) fits, else uint32; in place, the
    file's own tokens (uint16, or int32 read as uint32). One writer per directory (a held
    lock), a Ray address probed before anything is read, as for the other inputs."""
    probe_cluster(cfg.engine, cfg.ray_address)
    with DirLock(cfg.out, "prepare") as lock:
        return _prepare_megatron(cfg, lock)


def _prepare_megatron(cfg: MegatronConfig, lock: DirLock) -> dict[str, Any]:
    t0 = time.perf_counter()
    indexes = [read_index(p) for p in cfg.prefixes]
    check_distinct([ix.bin_path for ix in indexes], "--from-megatron")
    files = [f for ix in indexes for f in (Path(f"{ix.prefix}.idx"), ix.bin_path)]
    stamps = [[str(f.resolve()), *input_stamp(f)] for f in files]
    if sum(ix.documents for ix in indexes) == 0:
        raise UserError(f"--from-megatron {' '.join(cfg.prefixes)}: no documents; nothing written")
    top = max(_id_range(ix, _open(ix), cfg) or 0 for ix in indexes)
    missing = [missing_eos(_open(ix), ix.bounds, cfg.eos_id) for ix in indexes]
    empty = sum(int((np.diff(ix.bounds) == 0).sum()) for ix in indexes)
    appended = sum(int(m.sum()) for m in missing)
    refs = _in_place_refs(cfg, indexes, missing) if cfg.in_place else []
    ref = refs[0] if refs else None
    if ref is not None:
        out_dtype = str(ref["dtype"])
    else:
        out_dtype = "uint16" if max(top, cfg.eos_id) < 1 << 16 else "uint32"
    total = sum(ix.tokens for ix in indexes)
    identity = {
        "kind": "megatron",
        "inputs": canonical_sha256(stamps),  # paths, sizes and modification times
        "eos_id": cfg.eos_id,
        "vocab_size": cfg.vocab_size,
        **index_identity(cfg, total),
        **({"in_place": True} if ref else {}),
        **({"source_per_input": True} if cfg.source_per_input else {}),
    }
    finished = claim_out(cfg.out, cfg.out_url, identity, cfg.overwrite, lock)
    if finished is not None:
        return finished

    from ddecomp.preparing.pool import TokenJob

    cuts = [_shard_cuts(ix.bounds, identity["shard_size"]) for ix in indexes]
    plan = [(k, a, b) for k, c in enumerate(cuts) for a, b in c]
    several = len(refs) > 1

    def make_job(index: int, part: tuple[int, int, int]) -> TokenJob:
        k, a, b = part
        ix = indexes[k]
        start, end = int(ix.bounds[a]), int(ix.bounds[b])
        fence = ix.bounds[a : b + 1] - start
        if ref is not None:
            fence = np.unique(fence)  # empty documents have no token to index: skipped
        src_dtype = ix.dtype.str if ref is None else np.dtype(out_dtype).newbyteorder("<").str
        return TokenJob(
            cfg.out,
            index,
            ix.bin_path,
            src_dtype,
            0,
            start,
            end,
            out_dtype,
            cfg.eos_id,
            cfg.index_params(),
            cfg.out_url,
            ref is not None,
            fence,
            in_place_file=k if several else None,
        )

    records = run_shards(
        cfg,
        enumerate(plan),
        make_job,
        total=total,
        size=lambda p: int(indexes[p[0]].bounds[p[2]] - indexes[p[0]].bounds[p[1]]),
        unit="tok",
    )
    if [[str(f.resolve()), *input_stamp(f)] for f in files] != stamps:
        raise UserError(
            f"--from-megatron {' '.join(cfg.prefixes)} changed while prepare read it; the dataset "
            "was not finished: rerun with --overwrite once the files are final"
        )
    if top == 0 and cfg.vocab_size is None:
        top = max((int(_open(ix).max()) for ix in indexes if ix.tokens), default=0)
    info = {
        "source": None,
        "sha256": None,
        "vocab_size": cfg.vocab_size or max(top + 1, cfg.eos_id + 1),
        "eos_id": cfg.eos_id,
        "eos_token": None,
        "bos_id": None,
        "bos_token": None,
        "file": None,
    }
    inputs = {
        "kind": "megatron",
        "prefixes": [str(Path(ix.prefix).resolve()) for ix in indexes],
        "documents": [ix.documents for ix in indexes],
        "tokens": total,
        "dtypes": [ix.dtype.name for ix in indexes],
        "eos_appended": 0 if ref else appended,
    }
    skipped = {"empty_document": empty} if ref else {}
    elapsed = time.perf_counter() - t0
    man = build_manifest(
        cfg, records, info, out_dtype, inputs, {"skipped": skipped}, identity, elapsed
    )
    sources = None
    if cfg.source_per_input:  # shards never mix prefixes: one source per shard
        sources = sources_record(source_names(cfg.prefixes), [k for k, _, _ in plan])
    return finish(cfg, add_inputs(man, refs, sources))
