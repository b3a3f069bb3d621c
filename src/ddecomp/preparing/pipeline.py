"""``prepare``: inputs -> tokens -> decomposed shards -> manifest, resumable and parallel.

Two entry points share the shard writer (:mod:`ddecomp.preparing.shards`) and the manifest:

- :func:`prepare` reads text (files, directories or the built-in default corpus), trains or loads
  a tokenizer, and tokenizes in ``workers`` processes. The main process reads documents in order
  and cuts them into shards of about ``shard_size`` bytes of text; each worker tokenizes a shard,
  appends EOS (and BOS if asked), builds its index and writes it.
- :func:`prepare_tokens` takes an already-tokenized flat array (Megatron / OLMo-core / nanoGPT
  style, EOS between documents): shards are ranges of about ``shard_size`` tokens cut at
  document ends; workers read their range of the memory-mapped input, copy it into the shard's
  token file while hashing it, and index it. No tokenizer is needed.

Resumability: the first write is ``.prepare.json``, the run's identity (every argument that
changes the bytes, plus the input files' sizes). A rerun with the same identity keeps each shard
whose ``done.json`` and files are intact and redoes the rest; ``manifest.json`` is written last.
A different identity in a used directory is refused unless ``overwrite``. Workers never change the
result (shard boundaries are fixed by the input), so the fingerprint is the same for any count.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ddecomp.data.layout import FORMAT_VERSION, MANIFEST, TOKENIZER_FILE
from ddecomp.decompose import check_lengths, check_long_docs
from ddecomp.errors import UserError
from ddecomp.io import canonical_sha256, write_json_atomic
from ddecomp.preparing.inputs import InputFile, default_corpus_files, discover_inputs, input_size
from ddecomp.preparing.manifest import build_manifest
from ddecomp.preparing.outdir import claim_dir
from ddecomp.preparing.pool import ShardRunner
from ddecomp.preparing.pretokenized import open_token_source, token_ranges
from ddecomp.preparing.progress import Progress
from ddecomp.preparing.shards import IndexParams, load_done

log = logging.getLogger("ddecomp.preparing.pipeline")


def auto_shard_size(total: int) -> int:
    """About 32 shards, each 4M to 128M units (bytes of text or tokens).

    Small corpora still get enough shards to keep every worker busy; large ones get shards big
    enough that the per-shard files stay few. Depends only on the input, never on ``workers``.
    """
    return min(max(-(-total // 32), 4_000_000), 128_000_000)


def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class PrepareConfig:
    """Arguments of ``ddecomp prepare``; validated on construction.

    Lengths are in tokens (targets per row). ``shard_size`` is bytes of text per shard (tokens
    for ``--from-tokens``); ``None`` picks :func:`auto_shard_size` from the input's size.
    """

    out: Path
    inputs: tuple[str, ...] = ()
    tokenizer: str | None = None
    text_field: str = "text"
    eos_token: str | None = None
    bos: bool = False
    vocab_size: int = 8192
    min_len: int = 256
    max_len: int = 8192
    long_docs: str = "split"
    seed: int = 0
    val_fraction: float = 0.0
    shard_size: int | None = None
    workers: int = field(default_factory=default_workers)
    strict: bool = False
    overwrite: bool = False
    quiet: bool = False

    def __post_init__(self) -> None:
        check_lengths(self.min_len, self.max_len)
        check_long_docs(self.long_docs)
        if not 0.0 <= self.val_fraction < 1.0:
            raise UserError(f"--val-fraction {self.val_fraction} must be in [0, 1)")
        if self.workers < 1:
            raise UserError(f"--workers {self.workers} must be at least 1")
        if self.shard_size is not None and self.shard_size < 1:
            raise UserError(f"--shard-size {self.shard_size} must be positive")
        if self.vocab_size < 260:
            raise UserError(
                f"--vocab-size {self.vocab_size} is too small: byte-level BPE needs 260+"
            )

    def index_params(self) -> IndexParams:
        return IndexParams(self.min_len, self.max_len, self.long_docs, self.seed, self.val_fraction)


def _finish(cfg: PrepareConfig, man: dict[str, Any]) -> dict[str, Any]:
    write_json_atomic(cfg.out / MANIFEST, man)
    tot = man["totals"]
    log.info(
        "prepared %s: %d documents, %d tokens, %d kept targets in %d shards (%.1f s)",
        cfg.out,
        tot["documents"],
        tot["tokens"],
        tot["kept_targets"],
        tot["shards"],
        man["prepare"]["elapsed_s"],
    )
    return man


def _run_shards(
    cfg: PrepareConfig, jobs: Iterable[tuple[int, Any]], make_job: Any
) -> list[dict[str, Any]]:
    """Run (or skip when done) every shard job; return records in shard order."""
    records: dict[int, dict[str, Any]] = {}
    with Progress(cfg.quiet) as bar, ShardRunner(cfg.workers) as runner:
        for index, payload in jobs:
            done = load_done(cfg.out, index)
            if done is not None:
                records[index] = done
                bar.update(done["documents"], done["tokens"], resumed=True)
                continue
            for rec in runner.submit(make_job(index, payload)):
                records[rec["index"]] = rec
                bar.update(rec["documents"], rec["tokens"])
        for rec in runner.drain():
            records[rec["index"]] = rec
            bar.update(rec["documents"], rec["tokens"])
    return [records[i] for i in sorted(records)]


def iter_text_shards(docs: Iterator[str], shard_bytes: int) -> Iterator[tuple[int, list[str]]]:
    """Group documents into shards of about ``shard_bytes`` bytes of text, in order."""
    batch: list[str] = []
    size = 0
    index = 0
    for d in docs:
        batch.append(d)
        size += len(d)
        if size >= shard_bytes:
            yield index, batch
            index += 1
            batch, size = [], 0
    if batch:
        yield index, batch


# ---- text inputs ------------------------------------------------------------------------------
def _describe_files(files: Sequence[InputFile], default: bool) -> dict[str, Any]:
    listing = [[str(f), input_size(f)] for f in files]
    desc: dict[str, Any] = {
        "kind": "default-corpus" if default else "files",
        "files": len(files),
        "bytes": sum(s for _, s in listing),
        "listing_sha256": canonical_sha256(listing),
    }
    if default:
        import platform
        import sysconfig

        desc["description"] = "Python standard library .py sources, one document per file"
        desc["python"] = platform.python_version()
        desc["stdlib"] = sysconfig.get_paths()["stdlib"]
    else:
        desc["paths"] = [str(f) for f in files[:1000]]
    return desc


def prepare(cfg: PrepareConfig) -> dict[str, Any]:
    """Prepare text inputs (or the default corpus) into ``cfg.out``; return the manifest."""
    from ddecomp.preparing.ingest import IngestStats, iter_documents
    from ddecomp.preparing.tokenize import (
        TokenizerInfo,
        id_bound,
        load_tokenizer,
        resolve_special,
        save_tokenizer,
        token_dtype,
        train_bpe,
    )

    t0 = time.perf_counter()
    files = discover_inputs(cfg.inputs) if cfg.inputs else default_corpus_files()
    inputs = _describe_files(files, default=not cfg.inputs)
    identity = {
        "kind": "text",
        "inputs": inputs["listing_sha256"],
        "text_field": cfg.text_field,
        "tokenizer": cfg.tokenizer or f"train-bpe-{cfg.vocab_size}",
        "eos_token": cfg.eos_token,
        "bos": cfg.bos,
        **_index_identity(cfg, inputs["bytes"]),
    }

    def docs(stats: IngestStats, log_skips: bool = True) -> Iterator[str]:
        # Skips are logged once, on the pass that writes the dataset (or explains why not).
        return iter_documents(files, cfg.text_field, cfg.strict, stats, log_skips)

    if next(docs(IngestStats(), log_skips=False), None) is None:
        probe = IngestStats()
        for _ in docs(probe):
            pass
        raise UserError(
            f"no documents in the input ({len(files)} files; skipped: "
            f"{_fmt_skips(probe.as_dict())}); nothing was written"
        )
    finished = claim_dir(cfg.out, identity, cfg.overwrite)
    if finished is not None:
        log.info("%s is already prepared with these arguments; nothing to do", cfg.out)
        return finished

    tok_path = cfg.out / TOKENIZER_FILE
    if cfg.tokenizer:
        tok, source, _ = load_tokenizer(cfg.tokenizer)
    elif tok_path.is_file():  # trained by an interrupted run with the same identity
        tok, _, _ = load_tokenizer(str(tok_path))
        source = f"trained byte-level BPE (vocab {cfg.vocab_size})"
    else:
        log.info("training a byte-level BPE tokenizer (vocab %d) on the input", cfg.vocab_size)
        tok = train_bpe(docs(IngestStats(), log_skips=False), cfg.vocab_size)
        source = f"trained byte-level BPE (vocab {cfg.vocab_size})"
    sha = save_tokenizer(tok, tok_path)
    eos_id, eos_tok, bos_id, bos_tok = resolve_special(tok, cfg.eos_token, cfg.bos)
    vocab = id_bound(tok)  # largest id + 1: ids may have gaps
    dtype = np.dtype(token_dtype(vocab)).name
    info = TokenizerInfo(source, sha, vocab, eos_id, eos_tok, bos_id, bos_tok).as_dict()
    info["file"] = TOKENIZER_FILE
    tok_json = tok.to_str()

    from ddecomp.preparing.pool import TextJob

    def make_job(index: int, texts: list[str]) -> TextJob:
        return TextJob(
            cfg.out, index, texts, tok_json, sha, eos_id, bos_id, dtype, cfg.index_params()
        )

    stats = IngestStats()
    jobs = iter_text_shards(docs(stats), identity["shard_size"])
    records = _run_shards(cfg, jobs, make_job)
    man = build_manifest(
        cfg, records, info, dtype, inputs, stats.as_dict(), identity, time.perf_counter() - t0
    )
    return _finish(cfg, man)


def _fmt_skips(d: dict[str, Any]) -> str:
    skipped = {k: v for k, v in d.get("skipped", {}).items() if v}
    return ", ".join(f"{k} {v}" for k, v in skipped.items()) or "none"


def _index_identity(cfg: PrepareConfig, total: int) -> dict[str, Any]:
    return {
        "min_len": cfg.min_len,
        "max_len": cfg.max_len,
        "long_docs": cfg.long_docs,
        "seed": cfg.seed,
        "val_fraction": cfg.val_fraction,
        "shard_size": cfg.shard_size or auto_shard_size(total),
        "format_version": FORMAT_VERSION,
    }


# ---- already-tokenized inputs -----------------------------------------------------------------
def prepare_tokens(
    tokens: str | Path | np.ndarray,
    out_dir: str | Path,
    eos_id: int,
    *,
    dtype: str | None = None,
    vocab_size: int | None = None,
    min_len: int = 256,
    max_len: int = 8192,
    long_docs: str = "split",
    seed: int = 0,
    val_fraction: float = 0.0,
    shard_tokens: int | None = None,
    workers: int = 1,
    overwrite: bool = False,
    quiet: bool = True,
) -> dict[str, Any]:
    """Prepare an already-tokenized flat token array (EOS after each document); return manifest.

    ``tokens`` is a 1-D integer array, a raw token file (``dtype``, default uint16) or a ``.npy``.
    Stored as uint16 when every id fits, else uint32. ``vocab_size`` defaults to max id + 1.
    """
    t0 = time.perf_counter()
    cfg = PrepareConfig(
        out=Path(out_dir), min_len=min_len, max_len=max_len, long_docs=long_docs, seed=seed,
        val_fraction=val_fraction, shard_size=shard_tokens, workers=workers, overwrite=overwrite,
        quiet=quiet,
    )  # fmt: skip
    src, arr, header, ident = open_token_source(tokens, dtype)
    if isinstance(src, np.ndarray) and cfg.workers > 1:
        # Workers would receive the array's bytes pickled through a pipe (~30 s per 200M
        # tokens here), while one process indexes and writes it at ~380M tokens/s.
        cfg = dataclasses.replace(cfg, workers=1)
    if arr.size == 0:
        raise UserError("the token input is empty; nothing was written")
    if eos_id < 0:
        raise UserError(f"--eos-id {eos_id} must be >= 0")
    if arr.dtype.itemsize <= 2 and arr.dtype.kind == "u":
        out_dtype, max_id = "uint16", None
    else:
        lo, max_id = int(arr.min()), int(arr.max())
        if lo < 0:
            raise UserError(f"the token input has a negative id ({lo})")
        if max_id >= 1 << 32:
            raise UserError(f"the token input has id {max_id}, beyond uint32")
        out_dtype = "uint16" if max(max_id, eos_id) < 1 << 16 else "uint32"
    if eos_id >= 1 << (8 * np.dtype(out_dtype).itemsize) and max_id is None:
        raise UserError(f"--eos-id {eos_id} does not fit the input's dtype {arr.dtype.name}")
    identity = {
        "kind": "tokens", "inputs": ident, "eos_id": eos_id, "vocab_size": vocab_size,
        **_index_identity(cfg, int(arr.size)),
    }  # fmt: skip
    finished = claim_dir(cfg.out, identity, cfg.overwrite)
    if finished is not None:
        return finished
    ranges = token_ranges(arr, eos_id, identity["shard_size"])

    from ddecomp.preparing.pool import TokenJob

    def make_job(index: int, rng: tuple[int, int]) -> TokenJob:
        return TokenJob(
            cfg.out, index, src, arr.dtype.name, header, rng[0], rng[1], out_dtype, eos_id,
            cfg.index_params(),
        )  # fmt: skip

    records = _run_shards(cfg, enumerate(ranges), make_job)
    seen_max = max_id if max_id is not None else int(arr.max())
    vocab = max(vocab_size or 0, seen_max + 1, eos_id + 1)
    no_eos = sum(r.get("no_final_eos", 0) for r in records)
    if no_eos:
        log.warning(
            "the token input does not end with EOS; its last %d document(s) kept as is", no_eos
        )
    info = {"source": None, "sha256": None, "vocab_size": vocab, "eos_id": eos_id,
            "eos_token": None, "bos_id": None, "bos_token": None, "file": None}  # fmt: skip
    inputs = {"kind": "tokens", "source": ident, "tokens": int(arr.size), "dtype": arr.dtype.name}
    man = build_manifest(
        cfg, records, info, out_dtype, inputs, {"skipped": {}}, identity, time.perf_counter() - t0
    )
    return _finish(cfg, man)
