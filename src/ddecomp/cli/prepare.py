"""``ddecomp prepare [INPUT ...] --out DIR``: tokenize, decompose and write a dataset."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from ddecomp.decompose import LONG_DOC_POLICIES
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
        help="tokenize and decompose a corpus into power-of-two buckets",
        description="Read documents (files or directories of .jsonl, .jsonl.gz, .jsonl.zst, "
        ".parquet, .txt, .md, .rst, local or URLs such as s3://bucket/prefix/ through fsspec; "
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
        "backend, e.g. s3fs, must be installed)",
    )
    p.add_argument(
        "--out",
        required=True,
        metavar="DIR|URL",
        help="output directory, or a URL such as s3://bucket/prefix (any fsspec URL; shards are "
        "staged under $DDECOMP_CACHE and uploaded, the manifest last)",
    )
    src = p.add_argument_group("already-tokenized input")
    src.add_argument(
        "--from-tokens",
        metavar="FILE",
        help="flat token file (raw integers or .npy) with an EOS id after each document",
    )
    src.add_argument("--eos-id", type=int, metavar="N", help="EOS id in --from-tokens input")
    src.add_argument(
        "--in-place",
        action="store_true",
        help="index a uint16/uint32 --from-tokens FILE where it is instead of copying it (the "
        "dataset records its path, size and sha256; keep the file there)",
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
        help="tokenizer.json, a local HF tokenizer directory, or a hub name; default: train a "
        "byte-level BPE on the input and save it in DIR",
    )
    tok.add_argument(
        "--vocab-size", type=int, default=None,
        help=f"BPE size to train (default {DEFAULT_VOCAB}); with --from-tokens, the vocabulary "
        "size (every id must be below it; default: the largest id + 1)",
    )  # fmt: skip
    tok.add_argument("--eos-token", help="end-of-text token (default: the tokenizer's own)")
    tok.add_argument("--bos", action="store_true", help="also prepend a BOS token to documents")
    tok.add_argument(
        "--text-field", default="text", help="JSON field / parquet column (default text)"
    )
    dec = p.add_argument_group("decomposition")
    dec.add_argument(
        "--min-len", type=int, default=256, help="shortest piece in targets (default 256)"
    )
    dec.add_argument(
        "--max-len", type=int, default=8192, help="longest piece in targets (default 8192)"
    )
    dec.add_argument(
        "--long-docs",
        choices=LONG_DOC_POLICIES,
        default="split",
        help="pieces above max: split into max pieces (default) or spread over random lengths "
        "like the paper's reference release",
    )
    dec.add_argument(
        "--seed", type=int, default=0, help="seed for spread and the val split (default 0)"
    )
    dec.add_argument(
        "--val-fraction",
        type=float,
        default=0.0,
        help="fraction of documents held out for validation, by document (default 0)",
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
    run.add_argument("--quiet", action="store_true", help="plain log lines, no progress bar")
    p.set_defaults(func=run_prepare)


def run_prepare(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="ddecomp: %(message)s")
    if args.from_tokens:
        if args.inputs:
            raise UserError("give either INPUT files or --from-tokens, not both")
        if args.eos_id is None:
            raise UserError("--from-tokens needs --eos-id N, the id that ends every document")
        if args.tokenizer or args.bos or args.eos_token:
            raise UserError("--tokenizer/--bos/--eos-token do not apply to --from-tokens input")
        man = prepare_tokens(
            TokensConfig(
                tokens=args.from_tokens, out=args.out, eos_id=args.eos_id, dtype=args.dtype,
                vocab_size=args.vocab_size, min_len=args.min_len, max_len=args.max_len,
                long_docs=args.long_docs, seed=args.seed, val_fraction=args.val_fraction,
                shard_size=_shard(args), workers=args.workers, overwrite=args.overwrite,
                quiet=args.quiet, engine=args.engine, ray_address=args.ray_address,
                in_place=args.in_place,
            )
        )  # fmt: skip
    else:
        if args.eos_id is not None or args.dtype or args.in_place:
            raise UserError("--eos-id/--dtype/--in-place apply only to --from-tokens input")
        cfg = PrepareConfig(
            out=args.out, inputs=tuple(args.inputs), tokenizer=args.tokenizer,
            text_field=args.text_field, eos_token=args.eos_token, bos=args.bos,
            vocab_size=DEFAULT_VOCAB if args.vocab_size is None else args.vocab_size,
            min_len=args.min_len, max_len=args.max_len,
            long_docs=args.long_docs, seed=args.seed, val_fraction=args.val_fraction,
            shard_size=_shard(args), workers=args.workers, strict=args.strict,
            overwrite=args.overwrite, quiet=args.quiet, engine=args.engine,
            ray_address=args.ray_address,
        )  # fmt: skip
        man = prepare(cfg)
    print(summary_line(man, args.out))
    return 0


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
    return (
        f"{out}: {tot['documents']:,} documents, {tot['tokens']:,} tokens; train buckets hold "
        f"{tr['kept_targets']:,} targets; dropped: {d['document_shorter_than_min']['tokens']:,} "
        f"tokens in {d['document_shorter_than_min']['documents']:,} documents shorter than min, "
        f"{d['tail_below_min']['tokens']:,} tail tokens below min, {skipped:,} input records "
        f"skipped. Next: ddecomp stats {out}"
    )
