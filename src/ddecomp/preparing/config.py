"""The arguments of a ``prepare`` run: :class:`PrepareConfig` (text) and :class:`TokensConfig`
(already-tokenized input), frozen and validated on construction.

Both share the decomposition and run settings (:class:`RunSettings`), checked by one function,
so a bad value is refused with the same one-line message whichever entry point gets it. What
depends on the data (an EOS id the token file's dtype cannot hold, an id beyond
``vocab_size``) is checked by the pipeline once the input is open.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ddecomp.decompose import DEFAULT_LONG_DOCS, check_lengths, check_long_docs, check_tails
from ddecomp.errors import UserError
from ddecomp.preparing.shards import IndexParams

MIN_TRAIN_VOCAB = 256 + 1  # a byte-level BPE: the 256-byte alphabet + <|endoftext|>
DEFAULT_VOCAB = 8192  # the BPE size trained when no tokenizer is given
ENGINES = ("local", "ray")  # local: a process pool on this machine; ray: tasks on a Ray cluster


def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def auto_shard_size(total: int) -> int:
    """About 32 shards, each 4M to 128M units (bytes of text or tokens).

    Small corpora still get enough shards to keep every worker busy; large ones get shards big
    enough that the per-shard files stay few. Depends only on the input, never on ``workers``.
    """
    return min(max(-(-total // 32), 4_000_000), 128_000_000)


class RunSettings:
    """Fields both configs have, and their one check (the dataclasses below declare them)."""

    out: Path
    min_len: int
    max_len: int
    long_docs: str
    seed: int
    val_fraction: float
    shard_size: int | None
    workers: int
    tails: str
    tail_len: int | None
    engine: str
    ray_address: str | None
    out_url: str | None

    def _set_out(self) -> None:
        """``out`` a URL: kept in ``out_url``, and ``out`` becomes its local staging directory."""
        from ddecomp.data.remote import is_url
        from ddecomp.preparing.remote_out import staging_dir

        if is_url(self.out):
            object.__setattr__(self, "out_url", str(self.out).rstrip("/"))
            object.__setattr__(self, "out", staging_dir(str(self.out).rstrip("/")))
        object.__setattr__(self, "out", Path(self.out))

    def _check_run(self) -> None:
        check_lengths(self.min_len, self.max_len)
        check_long_docs(self.long_docs)
        check_tails(self.tails, self.tail_len, self.min_len)
        if not 0.0 <= self.val_fraction < 1.0:
            raise UserError(f"--val-fraction {self.val_fraction} must be in [0, 1)")
        if self.workers < 1:
            raise UserError(f"--workers {self.workers} must be at least 1")
        if self.shard_size is not None and self.shard_size < 1:
            raise UserError(f"--shard-size {self.shard_size} must be positive")
        if self.seed < 0:  # numpy's SeedSequence takes only non-negative entropy
            raise UserError(f"--seed {self.seed} must be >= 0")
        if self.engine not in ENGINES:
            raise UserError(f"--engine {self.engine!r} is not one of {', '.join(ENGINES)}")
        if self.ray_address is not None and self.engine != "ray":
            raise UserError("--ray-address applies only to --engine ray")

    def index_params(self) -> IndexParams:
        return IndexParams(
            self.min_len,
            self.max_len,
            self.long_docs,
            self.seed,
            self.val_fraction,
            self.tails,
            self.tail_len,
        )


@dataclass(frozen=True)
class PrepareConfig(RunSettings):
    """Arguments of ``ddecomp prepare``; validated on construction.

    Lengths are in tokens (targets per row). ``shard_size`` is bytes of text per shard; ``None``
    picks :func:`auto_shard_size` from the input's size. ``tails``: ``drop`` (the paper's
    release: pieces below ``min_len`` are not trained) or ``pack`` (packed into tail rows of
    ``tail_len``, default ``min_len``: every target trained; :mod:`ddecomp.preparing.tails`).
    ``engine`` runs the shards in a local process pool of ``workers`` (default) or as tasks on
    the Ray cluster at ``ray_address`` (``workers`` is then the cluster's business); the dataset
    is the same either way. ``source_per_input`` records each INPUT (a directory: all its files)
    as a source the batches name; shards are then also cut at input boundaries.
    """

    out: Path
    inputs: tuple[str, ...] = ()
    suffixes: tuple[str, ...] = ()  # only these suffixes in INPUT directories (--suffix)
    glob: str | None = None  # only paths matching this in INPUT directories (--glob)
    tokenizer: str | None = None
    text_field: str = "text"
    eos_token: str | None = None
    bos: bool = False
    vocab_size: int = DEFAULT_VOCAB
    min_len: int = 256
    max_len: int = 8192
    long_docs: str = DEFAULT_LONG_DOCS
    seed: int = 0
    val_fraction: float = 0.0
    shard_size: int | None = None
    workers: int = field(default_factory=default_workers)
    engine: str = "local"
    ray_address: str | None = None
    out_url: str | None = None  # set from a URL ``out`` (object storage); ``out`` is then staging
    strict: bool = False
    overwrite: bool = False
    quiet: bool = False
    tails: str = "drop"
    tail_len: int | None = None
    source_per_input: bool = False  # record each INPUT as a source (batches carry it)

    def __post_init__(self) -> None:
        self._set_out()
        self._check_run()
        if self.source_per_input and not self.inputs:
            raise UserError(
                "--source-per-input records each INPUT as a source; give the INPUTs (the "
                "default corpus is one source)"
            )
        if (self.suffixes or self.glob) and not self.inputs:
            raise UserError(
                "--suffix/--glob select files inside INPUT directories; give the INPUT "
                "directories (the default corpus is fixed)"
            )
        if self.vocab_size < MIN_TRAIN_VOCAB:
            raise UserError(
                f"--vocab-size {self.vocab_size} is too small: a byte-level BPE needs at least "
                f"{MIN_TRAIN_VOCAB} (256 bytes + <|endoftext|>)"
            )


@dataclass(frozen=True, eq=False)  # eq=False: ``tokens`` may be an array
class TokensConfig(RunSettings):
    """Arguments of ``ddecomp prepare --from-tokens``; validated on construction.

    ``tokens`` is a 1-D integer array, a raw token file (``dtype``, default uint16) or a
    ``.npy``, with ``eos_id`` after each document, or a tuple of such files (one document stream
    each, in order; :mod:`ddecomp.preparing.fromtokens`). ``vocab_size`` defaults to the largest
    id + 1; given, every id must be below it. ``shard_size`` is tokens per shard (``None``:
    :func:`auto_shard_size`). One worker by default: copying tokens is I/O, not CPU.
    ``in_place`` indexes a uint16/uint32 token file where it is instead of copying it: the
    dataset records its path, size and each shard's range sha256 and writes only index files.
    ``source_per_input`` records each file as a source the batches name.
    """

    tokens: str | Path | np.ndarray | tuple[str | Path, ...]
    out: Path
    eos_id: int
    dtype: str | None = None
    vocab_size: int | None = None
    min_len: int = 256
    max_len: int = 8192
    long_docs: str = DEFAULT_LONG_DOCS
    seed: int = 0
    val_fraction: float = 0.0
    shard_size: int | None = None
    workers: int = 1
    in_place: bool = False
    engine: str = "local"
    ray_address: str | None = None
    out_url: str | None = None  # set from a URL ``out`` (object storage); ``out`` is then staging
    overwrite: bool = False
    quiet: bool = True
    tails: str = "drop"
    tail_len: int | None = None
    source_per_input: bool = False  # record each file as a source (batches carry it)

    def __post_init__(self) -> None:
        self._set_out()
        self._check_run()
        if isinstance(self.tokens, list):  # a list from Python: a tuple keeps the config frozen
            object.__setattr__(self, "tokens", tuple(self.tokens))
        if isinstance(self.tokens, tuple) and not self.tokens:
            raise UserError("--from-tokens needs at least one FILE")
        if self.eos_id < 0:
            raise UserError(f"--eos-id {self.eos_id} must be >= 0")
        if self.vocab_size is not None and self.vocab_size <= self.eos_id:
            raise UserError(
                f"--vocab-size {self.vocab_size} must be above --eos-id {self.eos_id}; check both"
            )


@dataclass(frozen=True)
class MegatronConfig(RunSettings):
    """Arguments of ``ddecomp prepare --from-megatron PREFIX ...``; validated on construction.

    ``prefixes`` name Megatron indexed datasets (``PREFIX.idx`` + ``PREFIX.bin``), one document
    stream each, in order; ``eos_id`` is appended to every document that does not end with it
    (copied), or must end every non-empty one (``in_place``: a file cannot grow; several
    prefixes in place must share one token dtype). The other
    fields are :class:`TokensConfig`'s (:mod:`ddecomp.preparing.megatron`).
    """

    prefixes: tuple[str, ...]
    out: Path
    eos_id: int
    vocab_size: int | None = None
    min_len: int = 256
    max_len: int = 8192
    long_docs: str = DEFAULT_LONG_DOCS
    seed: int = 0
    val_fraction: float = 0.0
    shard_size: int | None = None
    workers: int = 1
    in_place: bool = False
    engine: str = "local"
    ray_address: str | None = None
    out_url: str | None = None
    overwrite: bool = False
    quiet: bool = True
    tails: str = "drop"
    tail_len: int | None = None
    source_per_input: bool = False  # record each prefix as a source (batches carry it)

    def __post_init__(self) -> None:
        self._set_out()
        self._check_run()
        if not self.prefixes:
            raise UserError("--from-megatron needs at least one PREFIX (PREFIX.idx + PREFIX.bin)")
        if self.eos_id < 0:
            raise UserError(f"--eos-id {self.eos_id} must be >= 0")
        if self.vocab_size is not None and self.vocab_size <= self.eos_id:
            raise UserError(
                f"--vocab-size {self.vocab_size} must be above --eos-id {self.eos_id}; check both"
            )
        if self.in_place and self.out_url is not None:
            raise UserError("--in-place references a local file; it cannot go with --out URL")
