"""``ddecomp plan DIR [DIR ...] --tokens-per-step N [--tokens T]``: print (and plot) a plan.

With ``--tokens`` the plan is the training run's, as ``ddecomp train --tokens T`` executes it
(steps, passes per bucket, mean length per tenth of the run, predicted cost); without it, one
pass over the data. Reads only the datasets' bucket row counts; builds the same
:class:`~ddecomp.loading.plan.Plan` the loader executes, so what it prints is what training will
serve. Several directories are planned
as a :class:`~ddecomp.data.blend.Blend` (``--factors`` or ``--shares``).

Without data: ``--rows 256=N,512=M,...`` plans from bucket row counts alone (a run of 10^12
tokens plans in well under a second: the plan holds its steps, never a row order). A dataset
URL (``s3://...``) is planned from its manifest alone: no index or token file is fetched.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ddecomp.cli.blend_args import add_source_arguments
from ddecomp.data.layout import SPLITS
from ddecomp.decompose import describe_long_docs, long_docs_of
from ddecomp.errors import UserError
from ddecomp.loading.curriculum import CURRICULA
from ddecomp.loading.plan import (
    LEGACY_MODES,
    MODES,
    build_plan,
    check_tokens_per_step,
)
from ddecomp.loading.plantext import format_summary
from ddecomp.training.config import SIZES, TrainConfig, check_plannable


def register(sub: Any) -> None:
    p = sub.add_parser(
        "plan",
        allow_abbrev=False,
        help="show the steps of a variable-sequence-length run (or of one pass)",
        description="Build the plan of a training run on a prepared dataset (no data is read): "
        "steps per bucket, passes over each bucket, rows left out, token-weighted mean sequence "
        "length per tenth of the run and the predicted step cost relative to always using the "
        "longest length. Step 0 is the OOM probe: one batch of the longest bucket moved to the "
        "front, so a run that would run out of memory does so at once (nothing added or lost).",
    )
    d = TrainConfig(data="", out="")
    add_source_arguments(p, optional=True)
    p.add_argument(
        "--rows",
        type=bucket_counts,
        metavar="L=N,...",
        help="plan without data from rows per bucket length, e.g. 256=4000000,512=2000000 "
        "(instead of DIR; default: none, read DIR)",
    )
    p.add_argument(
        "--tokens-per-step",
        type=int,
        default=d.tokens_per_step,
        metavar="N",
        help="tokens per optimizer step over all ranks; a multiple of max length x world size "
        f"(default {d.tokens_per_step:,}, as `ddecomp train`)",
    )
    p.add_argument(
        "--tokens",
        type=int,
        default=None,
        metavar="T",
        help="the run's training tokens, as given to 'ddecomp train --tokens': plan the run "
        "(default: one pass over the data)",
    )
    p.add_argument(
        "--curriculum",
        default=d.curriculum,
        metavar="NAME|ODDS",
        help=f"one of {', '.join(CURRICULA)} or comma-separated odds, one per bucket, "
        f"shortest first (default {d.curriculum})",
    )
    p.add_argument(
        "--cycles",
        type=int,
        default=d.cycles,
        help=f"curriculum cycles, a count (default {d.cycles})",
    )
    p.add_argument(
        "--mode",
        choices=[*MODES, *LEGACY_MODES],
        default="release",
        help="how a cycle realises the odds: release (default; the reference release's "
        "weighting: each bucket drawn with weight odds x its batches in the cycle, so uniform is "
        "a plain random mix) | odds (odds alone among the buckets not yet exhausted; old name "
        "sample) | olmo-layout (OLMo-core's deterministic layout: one sub-cycle per bucket, "
        "weights peaking in the bucket's own) | symmetric-layout (old name layout)",
    )
    p.add_argument(
        "--mixture",
        default=None,
        metavar="natural|equal",
        help="tokens per bucket: natural (default: every row once) or equal tokens per bucket",
    )
    p.add_argument(
        "--seed", type=int, default=d.seed, help=f"data-order seed, an integer (default {d.seed})"
    )
    p.add_argument("--epoch", type=int, default=0, help="epoch to plan, 0-based (default 0)")
    p.add_argument(
        "--world-size",
        type=int,
        default=1,
        help="data-parallel ranks, to check that the batch divides (default 1)",
    )
    p.add_argument("--split", choices=SPLITS, default="train", help="split (default train)")
    m = p.add_argument_group(
        "measured step costs (optional; needs torch)",
        "Time one training step per bucket length on this machine with the reference GPT, at "
        "--tokens-per-step, and price the epoch with those costs instead of the H100 line fit "
        "(when both are printed, the measured one is the estimate for this machine).",
    )
    m.add_argument(
        "--measure",
        metavar="SIZE",
        choices=SIZES,
        help=f"model size to time: {', '.join(SIZES)} (default: none, use the H100 line fit)",
    )
    m.add_argument("--device", default="auto", help="auto (default) | cpu | cuda | cuda:N")
    m.add_argument(
        "--iters", type=int, default=3, help="timed steps per length, a count (default 3)"
    )
    m.add_argument("--compile", action="store_true", help="torch.compile the model first")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument(
        "--plot", metavar="FILE.png", help="write the per-step length plot here (default: no plot)"
    )
    p.set_defaults(func=run)


def bucket_counts(text: str) -> dict[int, int]:
    """``--rows 256=4000000,512=2000000``: rows per bucket length (an argparse type)."""
    out: dict[int, int] = {}
    for part in text.split(","):
        L, sep, n = part.partition("=")
        try:
            length, rows = int(L), int(n)
        except ValueError:
            length, rows = 0, -1
        if not sep or length <= 0 or length & (length - 1) or rows < 0 or length in out:
            msg = f"{part!r} in {text!r} is not LENGTH=ROWS (a power of two, a count >= 0, once)"
            raise argparse.ArgumentTypeError(msg)
        out[length] = rows
    return out


def _bucket_source(args: argparse.Namespace) -> tuple[dict[int, int], Any, str, str]:
    """Rows per bucket, the opened data (None without), a name for titles, and the long-document
    policy of data that is not opened (a URL's manifest; ``--rows`` has none)."""
    from ddecomp.data.blend import Blend, open_sources
    from ddecomp.data.remote import is_url, manifest_bucket_rows, read_remote_manifest

    if args.rows is not None:
        if args.data:
            raise UserError("give either DIR or --rows, not both")
        lengths = sorted(args.rows)
        full = {L: args.rows.get(L, 0) for L in lengths}
        return full, None, "--rows", "n/a"
    if not args.data:
        raise UserError("give a prepared dataset DIR (or URL), or --rows L=N,... to plan without")
    if len(args.data) == 1 and is_url(args.data[0]) and args.factors is args.shares is None:
        man = read_remote_manifest(args.data[0])
        rows = manifest_bucket_rows(man, args.split)
        return rows, None, args.data[0].rstrip("/"), long_docs_of(man)
    ds = open_sources(args.data, args.factors, args.shares, args.seed, args.split)
    return dict(ds.bucket_rows), ds, "blend" if isinstance(ds, Blend) else ds.root.name, ""


def run(args: argparse.Namespace) -> int:
    from ddecomp.data.blend import Blend, format_blend
    from ddecomp.data.remote import is_url

    if args.measure and (args.rows is not None or any(map(is_url, args.data))):
        raise UserError("--measure needs a local dataset DIR (its vocabulary size)")
    check_plannable(args.tokens, args.tokens_per_step, args.seed, args.epoch)
    rows, ds, name, policy = _bucket_source(args)
    if args.world_size < 1:
        raise UserError(f"--world-size {args.world_size} must be >= 1")
    check_tokens_per_step(args.tokens_per_step, list(rows), args.world_size)
    plan = build_plan(
        rows,
        args.tokens_per_step,
        curriculum=args.curriculum,
        cycles=args.cycles,
        seed=args.seed,
        epoch=args.epoch,
        mode=args.mode,
        mixture=args.mixture,
        total_tokens=args.tokens,
    )
    s = plan.summary()
    if isinstance(ds, Blend):
        s["blend"] = ds.summary()
        s["long_docs"] = {str(d.root): long_docs_of(d.manifest) for d in ds.datasets}
    else:
        s["dataset"] = name if ds is None else str(ds.root)
        s["long_docs"] = policy if ds is None else long_docs_of(ds.manifest)
    s["world_size"] = args.world_size
    s["tokens_per_rank_step"] = args.tokens_per_step // args.world_size
    if args.plot:
        from ddecomp.reporting.plots import plot_plan

        scope = "one pass" if args.tokens is None else f"run of {args.tokens:,} tokens"
        title = (
            f"{name}: {args.tokens_per_step:,} tokens per step, {plan.curriculum.describe()}, "
            f"{plan.cycles} cycles ({args.mode}), {scope}; step 0 is the OOM probe (the longest "
            "length first)"
        )
        bucket_tokens = {b["length"]: b["tokens"] for b in s["buckets"]}
        plot_plan(plan.step_length, bucket_tokens, args.plot, title, s["mean_seq_len_by_tenth"])
    if args.measure:
        s["measured"] = _measure(args, ds.vocab_size, s)
    if args.json:
        print(json.dumps(s, indent=1))
    else:
        if "blend" in s:
            print(format_blend(s["blend"]))
        print(format_summary(s))
        policies = s["long_docs"] if isinstance(s["long_docs"], dict) else {"": s["long_docs"]}
        for root, policy in policies.items():
            if policy == "n/a":  # --rows: no data, no decomposition
                continue
            print(f"long documents{' of ' + root if root else ''}: {describe_long_docs(policy)}")
        if s.get("oom_probe"):
            print(
                "step 0 is the OOM probe: one batch of the longest bucket moved to the front "
                "(nothing added or lost), so a run that would run out of memory fails at once"
            )
        if args.measure:
            print(_format_measured(s["measured"]))
        if args.plot:
            print(f"plot: {args.plot}")
    return 0


def _measure(args: argparse.Namespace, vocab_size: int, s: dict[str, Any]) -> dict[str, Any]:
    """Fixed-shape step costs of every planned length (and the longest) priced over the plan."""
    from ddecomp.loading.world import World
    from ddecomp.training.config import TrainConfig
    from ddecomp.training.distributed import resolve_device
    from ddecomp.training.stepcost import measure_step_costs, price_plan

    tps = args.tokens_per_step // args.world_size  # one rank's share: what one device runs
    steps = {int(b["length"]): int(b["steps"]) for b in s["buckets"] if b["steps"]}
    lmax = int(s["max_seq_len"])
    cfg = TrainConfig(
        data=args.data[0],
        out="-",
        size=args.measure,
        tokens=2 * tps,
        tokens_per_step=tps,
        warmup=0,
        compile=args.compile,
    )
    device = resolve_device(args.device, World.detect())

    # Two untimed steps per length: the first length measured also pays the process's own
    # warm-up (thread pool, allocator, optimizer state), which one step did not absorb.
    def say(L: int, i: int, n: int) -> None:
        print(f"ddecomp plan: measuring length {L} ({i}/{n})", file=sys.stderr, flush=True)

    got = measure_step_costs(
        cfg,
        vocab_size,
        [*steps, lmax],
        device,
        warmup=_MEASURE_WARMUP,
        iters=args.iters,
        on_length=say,
    )
    costs = {L: c["median_s"] for L, c in got.items()}
    price = price_plan(steps, costs, lmax)
    return {
        "size": args.measure,
        "device": str(device),
        "tokens_per_device_step": tps,
        "iters": args.iters,
        "median_s": costs,
        "steps_per_length": steps,
        "max_seq_len": lmax,
        **price,
    }


_MEASURE_WARMUP = 2


def _format_measured(m: dict[str, Any]) -> str:
    lines = [
        f"measured step cost ({m['size']} model, {m['device']}, {m['tokens_per_device_step']:,} "
        f"tokens per device step; median of {m['iters']} after {_MEASURE_WARMUP} untimed):",
        f"{'length':>7} {'s/step':>9} {'steps':>8}",
    ]
    for L, t in sorted(m["median_s"].items()):
        lines.append(f"{L:>7} {t:>9.4f} {m['steps_per_length'].get(L, 0):>8,}")
    lines.append(
        f"epoch at these costs: DD {m['dd_s']:,.1f} s vs {m['epoch_steps']:,} steps at "
        f"{m['max_seq_len']} (concat-and-chunk) {m['baseline_s']:,.1f} s: {m['ratio']:.3f}x"
    )
    lines.append(
        "use this measured ratio for this machine and model; the predicted step cost above "
        "is the H100 160m line fit"
    )
    return "\n".join(lines)
