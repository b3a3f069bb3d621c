"""Retrieval accuracy of runs (``RUN/eval_<task>.json`` from ``ddecomp eval``): table and panel.

:func:`load_tasks` reads a run's task results; :func:`format_tasks` prints, per task, one row
per run with its accuracy at every context length and the mean; :func:`draw_task` draws one
task's accuracy against context length for every run, with the chance level as a dashed line.
Runs evaluated with other settings (samples, depths, choices, seed) are still shown, each with
its own numbers; the table says which settings it used.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ddecomp.errors import UserError
from ddecomp.io import read_json

if TYPE_CHECKING:
    from matplotlib.axes import Axes

TASK_FILE_PREFIX = "eval_"


def load_tasks(run: Path) -> dict[str, dict[str, Any]]:
    """``{task: result}`` of every ``eval_<task>.json`` in ``run`` (none: empty); a damaged one
    (malformed, nested too deep, unreadable) is one line naming it."""
    out = {}
    for p in sorted(Path(run).glob(f"{TASK_FILE_PREFIX}*.json")):
        try:
            res = read_json(p)
        except (OSError, ValueError) as e:
            raise UserError(f"{p}: unreadable ({e}); rerun `ddecomp eval` for that task") from e
        if isinstance(res, dict) and "accuracy_by_length" in res:
            out[str(res.get("task", p.stem[len(TASK_FILE_PREFIX) :]))] = res
    return out


def format_tasks(named: Sequence[tuple[str, Mapping[str, dict[str, Any]]]]) -> str:
    """Per task a Markdown table: run, accuracy per context length, mean (empty: no task)."""
    tasks = sorted({t for _, ts in named for t in ts})
    lines: list[str] = []
    for task in tasks:
        have = [(name, ts[task]) for name, ts in named if task in ts]
        lengths = sorted({int(L) for _, r in have for L in r["accuracy_by_length"]})
        first = have[0][1]
        lines += [
            "",
            f"{task}: accuracy per context length (mean over depths {first['depths']}; "
            f"{first['samples']} samples, {first['choices']} choices, chance "
            f"{first['chance']:.0%})",
            "| run | " + " | ".join(str(L) for L in lengths) + " | mean |",
            "|" + "---|" * (len(lengths) + 2),
        ]
        for name, r in have:
            acc = r["accuracy_by_length"]
            cells = [f"{acc[str(L)]:.0%}" if str(L) in acc else "-" for L in lengths]
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {r['accuracy_mean']:.0%} |")
    return "\n".join(lines)


def draw_task(ax: Axes, task: str, named: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
    """Accuracy vs context length of one task for every run that has it."""
    chance = None
    for name, r in named:
        Ls = sorted(int(L) for L in r["accuracy_by_length"])
        ax.plot(Ls, [100 * r["accuracy_by_length"][str(L)] for L in Ls], "o-", label=name)
        chance = r["chance"]
    if chance is not None:
        ax.axhline(100 * chance, color="0.4", ls="--", lw=1, label="chance")
    ax.set_ylim(0, 105)
