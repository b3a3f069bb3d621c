"""``prepare``: inputs -> tokens -> decomposed shards -> manifest, resumable and parallel.

Two entry points share the shard writer (:mod:`ddecomp.preparing.shards`) and the manifest:

- :func:`prepare` reads text (files, directories or the built-in default corpus), trains or loads
  a tokenizer, and tokenizes in ``workers`` processes. The main process reads documents in order
  and cuts them into shards of about ``shard_size`` bytes of text; each worker tokenizes a shard,
  appends EOS (and BOS if asked), builds its index and writes it.
- :func:`prepare_tokens` (:mod:`ddecomp.preparing.fromtokens`, re-exported here) takes
  already-tokenized flat token files (Megatron / OLMo-core / nanoGPT style, EOS between
  documents): shards are ranges of about ``shard_size`` tokens cut at document ends, never
  across a file. No tokenizer is needed.

With ``source_per_input`` each INPUT argument (a directory: all its files) is a source: its
files are discovered alone (:func:`~ddecomp.preparing.perinput.discover_groups`: a file reached
from two inputs is refused), its documents are cut into its own shards (a shard never mixes
inputs), and the manifest's ``sources`` names each shard's input. Without it the shards and the
fingerprint are the ones this code always wrote: one byte-count cut across all files.

Resumability: the first write is ``.prepare.json``, the run's identity (every argument that
changes the bytes, plus the input files' sizes and modification times, so an input edited in
place is noticed). A rerun with the same identity keeps each shard whose ``done.json`` and files
(size and sha256) are intact and redoes the rest; ``manifest.json`` is written last, and not at
all if an input changed while it was read. A different identity in a used directory is refused
unless ``overwrite`` (:mod:`ddecomp.preparing.outdir`). Workers never change the
result (shard boundaries are fixed by the input), so the fingerprint is the same for any count.

Engines: ``engine="local"`` (default) runs the shard jobs in this machine's process pool,
``engine="ray"`` as tasks on a Ray cluster (:mod:`ddecomp.preparing.ray_engine`); the planning,
resume and manifest above are the same code, so both write the same dataset.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ddecomp.data.layout import TOKENIZER_FILE
from ddecomp.dirlock import DirLock
from ddecomp.errors import UserError
from ddecomp.io import canonical_sha256
from ddecomp.preparing.config import (
    PrepareConfig,
    TokensConfig,
    auto_shard_size,
    default_workers,
)
from ddecomp.preparing.fromtokens import prepare_tokens
from ddecomp.preparing.inputs import (
    InputFile,
    default_corpus_files,
    discover_inputs,
    input_stamp,
    suffix_kind,
)
from ddecomp.preparing.manifest import add_inputs, build_manifest
from ddecomp.preparing.perinput import discover_groups, source_names, sources_record
from ddecomp.preparing.ray_engine import probe_cluster
from ddecomp.preparing.remote_out import claim_out
from ddecomp.preparing.shardrun import finish, index_identity, run_shards

__all__ = [
    "PrepareConfig",
    "TokensConfig",
    "auto_shard_size",
    "default_workers",
    "prepare",
    "prepare_tokens",
]
log = logging.getLogger("ddecomp.preparing.pipeline")


def iter_text_shards(
    docs: Iterator[str], shard_bytes: int, first: int = 0
) -> Iterator[tuple[int, list[str]]]:
    """Group documents into shards of about ``shard_bytes`` bytes of text, in order, numbered
    from ``first``."""
    batch: list[str] = []
    size = 0
    index = first
    for d in docs:
        batch.append(d)
        size += len(d)
        if size >= shard_bytes:
            yield index, batch
            index += 1
            batch, size = [], 0
    if batch:
        yield index, batch


def iter_source_shards(
    streams: Sequence[Iterator[str]], shard_bytes: int, shard_sources: list[int]
) -> Iterator[tuple[int, list[str]]]:
    """:func:`iter_text_shards` of each input's documents in turn, numbered on: no shard mixes
    inputs. Appends each shard's input index to ``shard_sources`` as it is yielded."""
    for k, docs in enumerate(streams):
        for index, batch in iter_text_shards(docs, shard_bytes, len(shard_sources)):
            shard_sources.append(k)
            yield index, batch


# ---- text inputs ------------------------------------------------------------------------------
def _stamps(files: Sequence[InputFile]) -> list[list[Any]]:
    return [[str(f), *input_stamp(f)] for f in files]


def _check_unchanged(files: Sequence[InputFile], stamps: list[list[Any]]) -> None:
    """Refuse to finish a dataset whose inputs changed while they were read."""
    now = _stamps(files)
    changed = [old[0] for old, new in zip(stamps, now, strict=True) if old != new]
    if changed:
        raise UserError(
            f"input {changed[0]} (and {len(changed) - 1} more) changed while prepare read it; "
            "the dataset was not finished: rerun with --overwrite once the inputs are final"
        )


def _describe_files(
    files: Sequence[InputFile], default: bool, stamps: list[list[Any]]
) -> dict[str, Any]:
    # The listing (paths and sizes) describes the data in the manifest; the modification stamps
    # only go into the run's identity, so a copied corpus gives the same fingerprint.
    listing = [st[:2] for st in stamps]
    desc: dict[str, Any] = {
        "kind": "default-corpus" if default else "files",
        "files": len(files),
        "bytes": sum(size for _, size in listing),
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


def _tokenizer_identity(spec: str | None, vocab_size: int) -> str:
    """The tokenizer as the identity names it: a local file with its size and mtime (an edited
    tokenizer must not resume shards the old one encoded), a hub name as given."""
    if spec is None:
        return f"train-bpe-{vocab_size}"
    path = Path(spec)
    path = path / TOKENIZER_FILE if path.is_dir() else path
    if path.is_file():
        size, mtime = input_stamp(path)
        return f"{spec}:{size}:{mtime}"
    return spec


def prepare(cfg: PrepareConfig) -> dict[str, Any]:
    """Prepare text inputs (or the default corpus) into ``cfg.out``; return the manifest."""
    probe_cluster(cfg.engine, cfg.ray_address)  # a wrong --ray-address fails before any work
    with DirLock(cfg.out, "prepare") as lock:  # one writer per directory, held to the end
        return _prepare(cfg, lock)


def _prepare(cfg: PrepareConfig, lock: DirLock) -> dict[str, Any]:
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
    groups: list[list[InputFile]] = []
    names: list[str] = []
    files: list[InputFile]
    if cfg.source_per_input:
        names = source_names(cfg.inputs)  # first: an input given twice is named as such
        groups = discover_groups(cfg.inputs, cfg.suffixes, cfg.glob)
        files = [f for g in groups for f in g]
    elif cfg.inputs:
        files = discover_inputs(cfg.inputs, cfg.suffixes, cfg.glob)
    else:
        files = list(default_corpus_files())
    stamps = _stamps(files)
    inputs = _describe_files(files, not cfg.inputs, stamps)
    identity = {
        "kind": "text",
        "inputs": canonical_sha256(stamps),  # paths, sizes and modification times
        "text_field": cfg.text_field,
        "tokenizer": _tokenizer_identity(cfg.tokenizer, cfg.vocab_size),
        "eos_token": cfg.eos_token,
        "bos": cfg.bos,
        **index_identity(cfg, inputs["bytes"]),
        # each input's name and file count: the same files grouped otherwise are other shards
        **(
            {"source_per_input": [[n, len(g)] for n, g in zip(names, groups, strict=True)]}
            if groups
            else {}
        ),
    }

    def docs(
        stats: IngestStats, log_skips: bool = True, part: Sequence[InputFile] = files
    ) -> Iterator[str]:
        # Skips are logged once, on the pass that writes the dataset (or explains why not).
        return iter_documents(part, cfg.text_field, cfg.strict, stats, log_skips)

    if next(docs(IngestStats(), log_skips=False), None) is None:
        probe = IngestStats()
        for _ in docs(probe):
            pass
        raise UserError(
            f"no documents in the input ({len(files)} files; skipped: "
            f"{_fmt_skips(probe.as_dict())}); nothing was written"
        )
    given = load_tokenizer(cfg.tokenizer) if cfg.tokenizer else None  # a typo writes nothing
    finished = claim_out(cfg.out, cfg.out_url, identity, cfg.overwrite, lock)
    if finished is not None:
        log.info("%s is already prepared with these arguments; nothing to do", cfg.out)
        return finished

    tok_path = cfg.out / TOKENIZER_FILE
    if given is not None:
        tok, source, _ = given
    elif tok_path.is_file():  # trained by an interrupted run with the same identity
        tok, _, _ = load_tokenizer(str(tok_path))
        source = f"trained byte-level BPE (vocab {cfg.vocab_size})"
    else:
        log.info("training a byte-level BPE tokenizer (vocab %d) on the input", cfg.vocab_size)
        tok = train_bpe(
            docs(IngestStats(), log_skips=False),
            cfg.vocab_size,
            progress=not cfg.quiet and sys.stderr.isatty(),
        )
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
            cfg.out,
            index,
            texts,
            tok_json,
            sha,
            eos_id,
            bos_id,
            dtype,
            cfg.index_params(),
            cfg.out_url,
        )

    stats = IngestStats()
    shard_sources: list[int] = []
    jobs = (
        iter_source_shards(
            [docs(stats, part=g) for g in groups], identity["shard_size"], shard_sources
        )
        if groups
        else iter_text_shards(docs(stats), identity["shard_size"])
    )
    # Text files are read byte for byte, so their bytes measure progress; JSON and compressed
    # files are not (their file bytes are not the documents'), and then the bar counts documents.
    plain = all(suffix_kind(f) == "text" for f in files)
    records = run_shards(
        cfg,
        jobs,
        make_job,
        total=inputs["bytes"] if plain else None,
        size=lambda texts: sum(len(t.encode("utf-8", "surrogatepass")) for t in texts),
    )
    _check_unchanged(files, stamps)
    man = build_manifest(
        cfg, records, info, dtype, inputs, stats.as_dict(), identity, time.perf_counter() - t0
    )
    sources = sources_record(names, shard_sources) if groups else None
    return finish(cfg, add_inputs(man, sources=sources))


def _fmt_skips(d: dict[str, Any]) -> str:
    skipped = {k: v for k, v in d.get("skipped", {}).items() if v}
    return ", ".join(f"{k} {v}" for k, v in skipped.items()) or "none"
