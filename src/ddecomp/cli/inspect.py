"""``ddecomp verify DIR`` and ``ddecomp stats DIR``: check and describe a prepared dataset."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ddecomp.cli.blend_args import add_source_arguments
from ddecomp.data.layout import SPLITS


def register(sub: Any) -> None:
    v = sub.add_parser(
        "verify",
        allow_abbrev=False,
        help="check files and invariants of a prepared dataset",
        description="Check every file's size and sha256 against the manifest and the format's "
        "invariants (rows inside one document, power-of-two lengths in range, counts). Exit 0 "
        "when intact, 1 with one line naming the file and the problem otherwise.",
    )
    v.add_argument("data", metavar="DIR", help="prepared dataset")
    v.set_defaults(func=run_verify)
    s = sub.add_parser(
        "stats",
        allow_abbrev=False,
        help="bucket shares, drops, length percentiles, attention cost vs concat-and-chunk",
        description="Per bucket rows, tokens (targets) and share; tokens dropped by reason; "
        "document length percentiles (tokens); mean attention context of DD vs "
        "concat-and-chunk at the maximum length and the predicted attention-FLOP ratio.",
    )
    add_source_arguments(s)  # several DIRs: the blend's per-source bucket shares
    s.add_argument("--split", choices=SPLITS, default="train", help="split (default train)")
    s.add_argument("--json", action="store_true", help="print JSON instead of a table")
    s.add_argument(
        "--plot", metavar="FILE.png", help="write the length/share figure here (default: no figure)"
    )
    s.set_defaults(func=run_stats)


def run_verify(args: argparse.Namespace) -> int:
    from ddecomp.data.verify import verify_dataset

    res = verify_dataset(args.data)
    print(f"{args.data}: OK ({res['files']} files in {res['shards']} shards verified)")
    return 0


def run_stats(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ddecomp.data.dataset import open_dataset
    from ddecomp.data.stats import compute_stats, format_stats
    from ddecomp.errors import UserError
    from ddecomp.io import check_output_file

    if args.plot:
        check_output_file(args.plot, "--plot")  # before the report, not after it
    if len(args.data) > 1 or args.factors or args.shares:
        return _blend_stats(args)
    data = args.data[0]
    if Path(data).is_file():
        raise UserError(
            f"{data} is a file; pass the dataset directory: ddecomp stats {Path(data).parent}"
        )
    ds = open_dataset(data, args.split)
    if args.split != "train" and not ds.manifest["splits"][args.split]["documents"]:
        raise UserError(
            f"{data} has no {args.split} split (prepared with --val-fraction 0); prepare "
            "with --val-fraction 0.02 to hold documents out"
        )
    stats = compute_stats(ds)
    print(json.dumps(stats, indent=1) if args.json else format_stats(stats))
    if args.plot:
        from ddecomp.reporting.plots import plot_stats

        plot_stats(stats, args.plot)
        if not args.json:
            print(f"plot: {args.plot}")
    return 0


def _blend_stats(args: argparse.Namespace) -> int:
    from ddecomp.data.blend import Blend, open_sources
    from ddecomp.data.blendstats import blend_stats, format_blend_stats
    from ddecomp.errors import UserError

    if args.plot:
        raise UserError("--plot draws one dataset; give one DIR (the blend's table has no figure)")
    blend = open_sources(args.data, args.factors, args.shares, split=args.split)
    assert isinstance(blend, Blend)
    s = blend_stats(blend)
    print(json.dumps(s, indent=1) if args.json else format_blend_stats(s))
    return 0
