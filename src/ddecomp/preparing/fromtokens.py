"""``prepare --from-tokens FILE [FILE ...]``: already-tokenized flat token files, one dataset.

Each file (or an in-memory array) is a flat token array with EOS after each document (Megatron /
OLMo-core / nanoGPT style, :mod:`ddecomp.preparing.pretokenized`): one document stream each, in
the order given, like several Megatron prefixes. Shards are ranges of about ``shard_size``
tokens cut just after an EOS and never across a file, so every document is inside one shard and
every shard inside one file; workers read their range of the memory-mapped file, copy it into
the shard's token file while hashing it, and index it. No tokenizer is needed.

Several files may hold different dtypes and be ``.npy`` or raw (``--dtype`` names the raw
ones'); copied, they are converted to the dataset's uint16 (every id fits) or uint32. In place
(``in_place``) each file is indexed where it is and must hold the same uint16/uint32 dtype (the
dataset reads its tokens as they are): one file is the manifest's ``tokens_file`` as before,
several are ``tokens_files`` and each shard's token record names its ``file``
(:mod:`ddecomp.data.tokenfile`). The same file given twice (or through a link) is refused, and
so is an empty file among several. With ``source_per_input`` each file is a source the batches
name (:mod:`ddecomp.preparing.perinput`).

One file gives exactly the dataset (and fingerprint) it gave before several were accepted: the
same identity, ``inputs`` record and shard plan.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from ddecomp.dirlock import DirLock
from ddecomp.errors import UserError
from ddecomp.preparing.config import TokensConfig
from ddecomp.preparing.inputs import input_stamp
from ddecomp.preparing.manifest import add_inputs, build_manifest
from ddecomp.preparing.perinput import check_distinct, source_names, sources_record
from ddecomp.preparing.pretokenized import in_place_reference, open_token_source, token_ranges
from ddecomp.preparing.ray_engine import probe_cluster
from ddecomp.preparing.remote_out import claim_out
from ddecomp.preparing.shardrun import finish, index_identity, run_shards
from ddecomp.preparing.tokencheck import check_tokens

log = logging.getLogger("ddecomp.preparing.pipeline")

_Source = tuple[Path | np.ndarray, np.ndarray, int, str]  # open_token_source's answer


def prepare_tokens(cfg: TokensConfig) -> dict[str, Any]:
    """Prepare already-tokenized flat token files or an array (EOS after each document); return
    the manifest.

    Stored as uint16 when every id fits, else uint32 (in place: the files' own dtype). The
    manifest's vocabulary size is ``cfg.vocab_size``, or the largest id (EOS included) + 1.
    """
    probe_cluster(cfg.engine, cfg.ray_address)
    with DirLock(cfg.out, "prepare") as lock:
        return _prepare_tokens(cfg, lock)


def _open_all(cfg: TokensConfig) -> list[_Source]:
    given = cfg.tokens if isinstance(cfg.tokens, tuple) else (cfg.tokens,)
    opened = [open_token_source(t, cfg.dtype) for t in given]
    if len(opened) > 1:
        check_distinct([s[0] for s in opened if isinstance(s[0], Path)], "--from-tokens")
        for src, arr, _, _ in opened:
            if arr.size == 0:
                raise UserError(f"--from-tokens {src}: empty (no token); leave it out of the list")
    elif opened[0][1].size == 0:
        raise UserError("the token input is empty; nothing was written")
    return opened


def _in_place_refs(cfg: TokensConfig, opened: list[_Source]) -> list[dict[str, object]]:
    refs = [in_place_reference(src, arr, header, cfg.out_url) for src, arr, header, _ in opened]
    dtypes = [str(r["dtype"]) for r in refs]
    if len(set(dtypes)) > 1:
        k = dtypes.index(next(d for d in dtypes if d != dtypes[0]))
        raise UserError(
            f"--from-tokens {opened[k][0]} holds {dtypes[k]}, {opened[0][0]} {dtypes[0]}: "
            "--in-place reads every file as the dataset's one dtype; drop --in-place to copy "
            "them (converted), or prepare them in place into separate DIRs and blend them"
        )
    return refs


def _prepare_tokens(cfg: TokensConfig, lock: DirLock) -> dict[str, Any]:
    t0 = time.perf_counter()
    opened = _open_all(cfg)
    several = len(opened) > 1
    if isinstance(opened[0][0], np.ndarray) and cfg.workers > 1:
        # Workers would receive the array's bytes pickled through a pipe (~30 s per 200M
        # tokens here), while one process indexes and writes it at ~380M tokens/s.
        cfg = dataclasses.replace(cfg, workers=1)
    max_ids = []
    for src, arr, _, _ in opened:
        what = "the token array" if isinstance(src, np.ndarray) else f"--from-tokens {src}"
        max_ids.append(check_tokens(cfg, arr, what))
    top = max((m or 0 for m in max_ids), default=0)
    out_dtype = "uint16" if max(top, cfg.eos_id) < 1 << 16 else "uint32"
    refs = _in_place_refs(cfg, opened) if cfg.in_place else []
    if refs:
        out_dtype = str(refs[0]["dtype"])  # the files' own tokens
    # The identity adds each file's modification time (an in-place edit keeps the size); the
    # manifest names the data by path, size and dtype only.
    stamps = [None if isinstance(s[0], np.ndarray) else input_stamp(s[0]) for s in opened]
    idents = [
        ident if st is None else f"{ident}:{st[1]}"
        for (_, _, _, ident), st in zip(opened, stamps, strict=True)
    ]
    total = sum(int(s[1].size) for s in opened)
    identity = {
        "kind": "tokens",
        "inputs": idents if several else idents[0],
        "eos_id": cfg.eos_id,
        "vocab_size": cfg.vocab_size,
        **index_identity(cfg, total),
        **({"in_place": True} if refs else {}),
        **({"source_per_input": True} if cfg.source_per_input else {}),
    }
    finished = claim_out(cfg.out, cfg.out_url, identity, cfg.overwrite, lock)
    if finished is not None:
        return finished
    plan = [
        (k, rng)
        for k, (_, arr, _, _) in enumerate(opened)
        for rng in token_ranges(arr, cfg.eos_id, identity["shard_size"])
    ]

    from ddecomp.preparing.pool import TokenJob

    def make_job(index: int, part: tuple[int, tuple[int, int]]) -> TokenJob:
        k, (a, b) = part
        src, arr, header, _ = opened[k]
        if isinstance(src, np.ndarray) and cfg.engine == "ray":
            # A task gets its own range (serialized once), not the whole array per task.
            src, header, a, b = src[a:b], 0, 0, b - a
        return TokenJob(
            cfg.out,
            index,
            src,
            arr.dtype.str,  # its byte order too: a big-endian .npy is converted
            header,
            a,
            b,
            out_dtype,
            cfg.eos_id,
            cfg.index_params(),
            cfg.out_url,
            bool(refs),
            in_place_file=k if refs and several else None,
        )

    records = run_shards(
        cfg, enumerate(plan), make_job, total=total, size=lambda p: p[1][1] - p[1][0], unit="tok"
    )
    for (src, _, _, _), st in zip(opened, stamps, strict=True):
        try:
            changed = isinstance(src, Path) and input_stamp(src) != st
        except OSError:  # removed
            changed = True
        if changed:
            raise UserError(
                f"--from-tokens {src} changed while prepare read it (or was removed); the "
                "dataset was not finished: rerun with --overwrite once the file is final"
            )
    seen_max = max(
        m if m is not None else int(s[1].max()) for m, s in zip(max_ids, opened, strict=True)
    )
    vocab = cfg.vocab_size or max(seen_max + 1, cfg.eos_id + 1)
    no_eos = sum(r.get("no_final_eos", 0) for r in records)
    if no_eos:
        log.warning(
            "the token input does not end with EOS; its last %d document(s) kept as is", no_eos
        )
    info = {
        "source": None,
        "sha256": None,
        "vocab_size": vocab,
        "eos_id": cfg.eos_id,
        "eos_token": None,
        "bos_id": None,
        "bos_token": None,
        "file": None,
    }
    inputs: dict[str, Any] = (
        {
            "kind": "tokens",
            "tokens": total,
            "sources": [s[3] for s in opened],
            "dtypes": [s[1].dtype.name for s in opened],
        }
        if several
        else {
            "kind": "tokens",
            "source": opened[0][3],
            "tokens": total,
            "dtype": opened[0][1].dtype.name,
        }
    )
    man = build_manifest(
        cfg, records, info, out_dtype, inputs, {"skipped": {}}, identity, time.perf_counter() - t0
    )
    sources = None
    if cfg.source_per_input:
        names = source_names([str(s[0]) if isinstance(s[0], Path) else "array" for s in opened])
        sources = sources_record(names, [k for k, _ in plan])
    return finish(cfg, add_inputs(man, refs, sources))
