"""``ddecomp eval RUN --task passkey|kv-retrieval``: long-context retrieval on a trained run.

Builds the task from the held-out (``val``) documents of the run's dataset, scores the run's
latest checkpoint by multiple choice and writes ``RUN/eval_<task>.json`` (accuracy per context
length and depth), which ``ddecomp compare`` draws (:mod:`ddecomp.evaluation`).
"""

from __future__ import annotations

import argparse
from typing import Any

from ddecomp.errors import UserError

_TASKS = ("passkey", "kv-retrieval")  # ddecomp.evaluation.tasks.TASKS (no torch import here)


def _ints(s: str) -> list[int]:
    try:
        return [int(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise UserError(
            f"--lengths {s!r}: give comma-separated token counts, e.g. 256,512"
        ) from None


def _floats(s: str) -> list[float]:
    try:
        return [float(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"--depths {s!r}: give comma-separated fractions, e.g. 0,0.5,1") from None


def register(sub: Any) -> None:
    p = sub.add_parser(
        "eval",
        allow_abbrev=False,
        help="long-context retrieval (passkey, kv-retrieval) on a trained run",
        description="Score a run's latest checkpoint on retrieval tasks built from its dataset's "
        "held-out documents: multiple choice by the summed log-likelihood of each candidate "
        "answer. Writes RUN/eval_<task>.json; `ddecomp compare` draws it.",
    )
    p.add_argument("run", metavar="RUN", help="a `ddecomp train` run directory")
    p.add_argument("--task", choices=_TASKS, required=True, help="the task (required)")
    p.add_argument(
        "--lengths",
        type=_ints,
        default=None,
        help="context lengths in tokens, comma-separated (default: powers of two from "
        "max(64, max_len/16) to the run's max_len)",
    )
    p.add_argument(
        "--depths",
        type=_floats,
        default=[0.0, 0.25, 0.5, 0.75, 1.0],
        help="where the needle or the gold document sits, fractions of the context, "
        "comma-separated (default 0,0.25,0.5,0.75,1)",
    )
    p.add_argument(
        "--samples",
        type=int,
        default=20,
        help="examples per length and depth, a count (default 20)",
    )
    p.add_argument(
        "--choices",
        type=int,
        default=4,
        help="candidate answers per example, a count, the right one included (default 4: "
        "chance 25%%)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the examples (default 0)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N")
    p.add_argument(
        "--data",
        nargs="+",
        default=None,
        metavar="DIR",
        help="dataset directories to take held-out documents from (default: the run's)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ddecomp.evaluation.runmodel import evaluate_run

    res = evaluate_run(
        args.run, args.task, args.lengths, args.depths, args.samples, args.seed, args.choices,
        args.device, args.data,
    )  # fmt: skip
    print(f"{res['task']} on {res['run']} (step {res['step']}), chance {res['chance']:.0%}:")
    heads = " ".join(f"{'d=' + format(d, 'g'):>7}" for d in res["depths"])
    print(f"{'length':>8} {heads}    mean")
    for L, row in res["accuracy"].items():
        cells = " ".join(f"{v:>7.0%}" for v in row.values())
        print(f"{L:>8} {cells} {res['accuracy_by_length'][L]:>7.0%}")
    print(f"written: {res['run']}/eval_{res['task']}.json")
    return 0
