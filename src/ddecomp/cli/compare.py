"""``ddecomp compare RUN [RUN ...] [--plot FILE.png] [--json]``: runs side by side.

The first run is the baseline: time per token and time to its final validation loss are reported
relative to it (see :mod:`ddecomp.reporting.compare`).
"""

from __future__ import annotations

import argparse
import json
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser(
        "compare",
        allow_abbrev=False,
        help="compare training runs: time per token, losses, time to the baseline's val loss",
        description="Compare runs written by `ddecomp train` on the same data and model size. "
        "The first RUN is the baseline.",
    )
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories (first: baseline)")
    p.add_argument(
        "--plot", metavar="FILE.png", help="write the six-panel figure here (default: no figure)"
    )
    p.add_argument(
        "--plot-sources",
        metavar="FILE.png",
        help="runs on a blend: write each source's loss over tokens and per length here "
        "(default: no figure)",
    )
    p.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ddecomp.errors import UserError
    from ddecomp.reporting.compare import compare, format_retrieval, format_table, load_run

    if args.plot:
        from ddecomp.io import check_output_file

        check_output_file(args.plot, "--plot")
    seen: dict[Path, str] = {}
    for r in args.runs:
        key = Path(r).resolve()
        if key in seen:
            raise UserError(
                f"{r} is given twice (also as {seen[key]}); compare each run once, the "
                "baseline first"
            )
        seen[key] = r
    runs = [load_run(r) for r in args.runs]
    rows = compare(runs)
    print(json.dumps(rows, indent=1) if args.json else format_table(rows))
    if not args.json and any(r.tasks for r in runs):
        print(format_retrieval(runs))
    from ddecomp.reporting.sources import format_source_table, plot_sources, source_rows

    per_source = source_rows(runs)  # runs on a blend: one row per run and source
    if per_source and not args.json:
        print("\nper source:\n" + format_source_table(per_source))
    if args.plot_sources:
        plot_sources(runs, args.plot_sources)
        print(f"wrote {args.plot_sources}")
    if args.plot:
        from ddecomp.reporting.plots import plot_runs

        plot_runs(runs, args.plot)
        print(f"wrote {args.plot}")
    return 0
