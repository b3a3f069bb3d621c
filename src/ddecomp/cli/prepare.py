"""``ddecomp prepare [INPUT ...] --out DIR``: tokenize, decompose and write a dataset."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, TypedDict

from ddecomp.decompose import DEFAULT_LONG_DOCS, LONG_DOC_POLICIES, TAIL_POLICIES
from ddecomp.errors import UserError
from ddecomp.preparing.config import (
    DEFAULT_VOCAB,
    ENGINES,
    PrepareConfig,
    TokensConfig,
    default_workers,
)
from ddecomp.preparing.pipeline import prepare, prepare_tokens

_TOKEN_DTYPES = ("uint16", "uint32", "int32", "int64", "uint64")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "prepare",
        allow_abbrev=False,
        help="tokenize and decompose a corpus into power-of-two buckets",
        description="Read documents (files or directories of .jsonl, .jsonl.gz, .jsonl.zst, "
        ".parquet, .txt, .md, .rst and source code such as .py, .c, .rs: one document per file; "
        "local or URLs such as s3://bucket/prefix/ through fsspec; "
        "with no INPUT the built-in default corpus, the Python "
        "standard library's sources), tokenize them with EOS appended, decompose every document "
        "into power-of-two pieces and write the dataset to DIR. Rerunning with the same "
        "arguments resumes an interrupted run.",
    )
    p.add_argument(
        "inputs",
        nargs="*",
        metavar="INPUT",
        help="files or directories, or URLs (s3://, gs://, hf://, file://; the scheme's fsspec "
        "backend, e.g. s3fs, must be installed); default: the Python standard library's sources",
    )
    p.add_argument(
        "--out",
        required=True,
        metavar="DIR|URL",
        help="output directory, or a URL such as s3://bucket/prefix (any fsspec URL; shards are "
        "staged under $DDECOMP_CACHE and uploaded, the manifest last; required)",
    )
    p.add_argument(
        "--suffix",
        type=_suffixes,
        default=(),
        metavar=".EXT,.EXT,...",
        help="read only files with these suffixes from INPUT directories, e.g. .py,.c "
        "(default: every supported suffix)",
    )
    p.add_argument(
        "--glob",
        default=None,
        metavar="PATTERN",
        help="read only files of INPUT directories whose path below the directory (or name) "
        "matches this fnmatch pattern, e.g. 'src/*.py' (default: all)",
    )
    src = p.add_argument_group("already-tokenized input")
    src.add_argument(
        "--from-tokens",
        nargs="+",
        metavar="FILE",
        help="flat token files (raw integers or .npy) with an EOS id after each document, one "
        "document stream each, in order; a shard never crosses a file (default: none, read "
        "text INPUT)",
    )
    src.add_argument(
        "--from-megatron",
        nargs="+",
        metavar="PREFIX",
        help="Megatron indexed datasets PREFIX.idx + PREFIX.bin, one document stream each; "
        "--eos-id is appended to every document that does not end with it (copied; with "
        "--in-place, uint16/int32 PREFIXes of one dtype whose documents end with it) "
        "(default: none)",
    )
    src.add_argument(
        "--source-per-input",
        action="store_true",
        help="record each INPUT (a directory: all its files), --from-tokens FILE or "
        "--from-megatron PREFIX as a source, named by its last path component (more when two "
        "share it); shards never mix sources; batches then carry each row's source and `train` "
        "logs loss per source (default: off, one source)",
    )
    src.add_argument(
        "--eos-id",
        type=int,
        metavar="N",
        help="the token id that ends every document (required with --from-tokens; no default)",
    )
    src.add_argument(
        "--in-place",
        action="store_true",
        help="index uint16/uint32 --from-tokens FILEs (one dtype) or --from-megatron .bin files "
        "where they are instead of copying them (the dataset records each file's path, size "
        "and per-shard sha256; keep the files there) (default: off, copy)",
    )
    src.add_argument(
        "--dtype",
        choices=_TOKEN_DTYPES,
        default=None,
        help="integer type of a raw --from-tokens file (default uint16; .npy files say it)",
    )
    tok = p.add_argument_group("tokenizer")
    tok.add_argument(
        "--tokenizer",
        metavar="PATH|NAME",
        help="tokenizer.json, a local HF tokenizer directory, or a hub name (default: train a "
        "byte-level BPE on the input and save it in DIR)",
    )
    tok.add_argument(
        "--vocab-size",
        type=int,
        default=None,
        help=f"BPE vocabulary to train, in tokens (default {DEFAULT_VOCAB}); with --from-tokens, "
        "the vocabulary size (every id must be below it; default: the largest id + 1)",
    )
    tok.add_argument(
        "--eos-token", help="end-of-text token, a string (default: the tokenizer's own)"
    )
    tok.add_argument("--bos", action="store_true", help="also prepend a BOS token to documents")
    tok.add_argument(
        "--text-field", default="text", help="JSON field / parquet column (default text)"
    )
    dec = p.add_argument_group("decomposition")
    dec.add_argument(
        "--min-len",
        type=int,
        default=256,
        help="shortest piece in targets (= tokens per training sequence; default 256)",
    )
    dec.add_argument(
        "--max-len",
        type=int,
        default=8192,
        help="longest piece in targets (= tokens per training sequence; default 8192)",
    )
    dec.add_argument(
        "--long-docs",
        choices=LONG_DOC_POLICIES,
        default=DEFAULT_LONG_DOCS,
        help="documents above 2 x max targets: spread over random lengths 2^k with P ~ 2^-k "
        "while 2 x max targets remain, as the paper's reference release (default spread, seeded "
        "by --seed), or split into max pieces as OLMo-core",
    )
    dec.add_argument(
        "--tails",
        choices=TAIL_POLICIES,
        default="drop",
        help="pieces below min (short documents, tails): drop them (default, as the paper's "
        "release) or pack them into tail rows with a document mask, so every target is trained",
    )
    dec.add_argument(
        "--tail-len",
        type=int,
        default=None,
        metavar="T",
        help="with --tails pack: targets per tail row, in tokens, a power of two <= --min-len "
        "(default: --min-len)",
    )
    dec.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed for spread, tail packing and the val split (default 0)",
    )
    dec.add_argument(
        "--val-fraction",
        type=float,
        default=0.0,
        help="fraction of documents held out for validation, by document, in [0, 1) "
        "(default 0: no validation split; `ddecomp train` then cannot evaluate)",
    )
    run = p.add_argument_group("run")
    run.add_argument(
        "--workers",
        type=int,
        default=default_workers(),
        help=f"worker processes (default: all cores, here {default_workers()})",
    )
    run.add_argument(
        "--shard-size",
        type=float,
        default=None,
        metavar="N",
        help="shard size: N MB of text, or N million tokens with --from-tokens (default: about "
        "1/32 of the input, within 4..128)",
    )
    run.add_argument(
        "--engine",
        choices=ENGINES,
        default="local",
        help="where shards run: local worker processes (default) or tasks on a Ray cluster "
        "(pip install 'ddecomp[ray]'; --out must be visible to every node)",
    )
    run.add_argument(
        "--ray-address",
        metavar="ADDR",
        default=None,
        help="the Ray cluster to join, e.g. 10.0.0.1:6379 (default: RAY_ADDRESS, a cluster on "
        "this machine, or a new local one)",
    )
    run.add_argument("--strict", action="store_true", help="stop at the first bad input record")
    run.add_argument(
        "--overwrite", action="store_true", help="replace a dataset prepared differently"
    )
    run.add_argument(
        "--quiet",
        "--no-progress",
        dest="quiet",
        action="store_true",
        help="plain log lines instead of a progress bar (the default when stderr is not a "
        "terminal)",
    )
    p.set_defaults(func=run_prepare)


def run_prepare(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="ddecomp: %(message)s")
    if args.source_per_input and not (args.from_megatron or args.from_tokens or args.inputs):
        raise UserError(
            "--source-per-input records each INPUT, --from-tokens FILE or --from-megatron "
            "PREFIX as a source; give them (the default corpus is one source)"
        )
    if args.from_megatron:
        man = _prepare_megatron(args)
    elif args.from_tokens:
        if args.inputs:
            raise UserError("give either INPUT files or --from-tokens, not both")
        if args.eos_id is None:
            raise UserError("--from-tokens needs --eos-id N, the id that ends every document")
        if args.tokenizer or args.bos or args.eos_token:
            raise UserError("--tokenizer/--bos/--eos-token do not apply to --from-tokens input")
        man = prepare_tokens(
            TokensConfig(
                # one FILE as before (the same identity), several as a tuple
                tokens=args.from_tokens[0]
                if len(args.from_tokens) == 1
                else tuple(args.from_tokens),
                out=args.out,
                eos_id=args.eos_id,
                dtype=args.dtype,
                vocab_size=args.vocab_size,
                **_common(args),
                in_place=args.in_place,
                source_per_input=args.source_per_input,
            )
        )
    else:
        if args.eos_id is not None or args.dtype or args.in_place:
            raise UserError("--eos-id/--dtype/--in-place apply only to --from-tokens input")
        cfg = PrepareConfig(
            out=args.out,
            inputs=tuple(args.inputs),
            tokenizer=args.tokenizer,
            suffixes=args.suffix,
            glob=args.glob,
            text_field=args.text_field,
            eos_token=args.eos_token,
            bos=args.bos,
            vocab_size=DEFAULT_VOCAB if args.vocab_size is None else args.vocab_size,
            **_common(args),
            strict=args.strict,
            source_per_input=args.source_per_input,
        )
        man = prepare(cfg)
    print(summary_line(man, args.out))
    if args.val_fraction > 0 and not man["splits"]["val"]["documents"]:
        print(
            f"ddecomp prepare: warning: --val-fraction {args.val_fraction} held out no document "
            f"of {man['totals']['documents']:,}: the validation split is empty; raise "
            "--val-fraction or add documents",
            file=sys.stderr,
        )
    return 0


def _prepare_megatron(args: argparse.Namespace) -> dict[str, Any]:
    from ddecomp.preparing.config import MegatronConfig
    from ddecomp.preparing.megatron import prepare_megatron

    if args.inputs or args.from_tokens or args.dtype:
        raise UserError("--from-megatron takes no INPUT, --from-tokens or --dtype (the .idx says)")
    if args.eos_id is None:
        raise UserError("--from-megatron needs --eos-id N, the id that ends every document")
    if args.tokenizer or args.bos or args.eos_token:
        raise UserError("--tokenizer/--bos/--eos-token do not apply to --from-megatron input")
    return prepare_megatron(
        MegatronConfig(
            prefixes=tuple(args.from_megatron),
            out=args.out,
            eos_id=args.eos_id,
            vocab_size=args.vocab_size,
            **_common(args),
            in_place=args.in_place,
            source_per_input=args.source_per_input,
        )
    )


def _suffixes(text: str) -> tuple[str, ...]:
    """``--suffix .py,.c``: the comma-separated suffixes (checked where the files are found)."""
    return tuple(s for s in (x.strip() for x in text.split(",")) if s)


class _Common(TypedDict):
    """The options every input kind shares (text, ``--from-tokens``, ``--from-megatron``), read
    once; a TypedDict, so mypy still checks each keyword of every config it is unpacked into."""

    min_len: int
    max_len: int
    long_docs: str
    seed: int
    val_fraction: float
    tails: str
    tail_len: int | None
    shard_size: int | None
    workers: int
    overwrite: bool
    quiet: bool
    engine: str
    ray_address: str | None


def _common(args: argparse.Namespace) -> _Common:
    return _Common(
        min_len=args.min_len,
        max_len=args.max_len,
        long_docs=args.long_docs,
        seed=args.seed,
        val_fraction=args.val_fraction,
        tails=args.tails,
        tail_len=args.tail_len,
        shard_size=_shard(args),
        workers=args.workers,
        overwrite=args.overwrite,
        quiet=args.quiet,
        engine=args.engine,
        ray_address=args.ray_address,
    )


def _shard(args: argparse.Namespace) -> int | None:
    if args.shard_size is None:
        return None
    if not args.shard_size > 0:  # `not >`: NaN is refused too
        raise UserError(f"--shard-size {args.shard_size} must be positive (MB, or M tokens)")
    return max(1, int(args.shard_size * 1_000_000))


def summary_line(man: dict[str, Any], out: str | Path) -> str:
    tot = man["totals"]
    tr = man["splits"]["train"]
    d = tr["dropped"]
    skipped = sum(man["dropped"]["ingest"].get("skipped", {}).values())
    va = man["splits"]["val"]
    val = f", validation buckets {va['kept_targets']:,}" if va["documents"] else ""
    tb = tr.get("tail_bucket")
    if tb is not None:  # --tails pack: nothing dropped, the tail rows' padding instead
        return (
            f"{out}: {_n(tot['documents'], 'document')}, {tot['tokens']:,} tokens; train buckets "
            f"hold {tr['kept_targets']:,} targets (every target){val}, {tb['targets']:,} of them "
            f"in {_n(tb['rows'], 'tail row')} of {tb['length']} with {tb['padding']:,} padding "
            f"positions; {_n(skipped, 'input record')} skipped. Next: ddecomp stats {out}"
        )
    short = d["document_shorter_than_min"]
    return (
        f"{out}: {_n(tot['documents'], 'document')}, {tot['tokens']:,} tokens; train buckets "
        f"hold {tr['kept_targets']:,} targets{val}; dropped: {short['tokens']:,} tokens in "
        f"{_n(short['documents'], 'document')} shorter than min, "
        f"{d['tail_below_min']['tokens']:,} tail tokens below min, "
        f"{_n(skipped, 'input record')} skipped. Next: ddecomp stats {out}"
    )


def _n(count: int, noun: str) -> str:
    """``1 document``, ``2 documents``."""
    return f"{count:,} {noun}{'' if count == 1 else 's'}"
