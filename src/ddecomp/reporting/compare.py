"""Side-by-side comparison of training runs (``ddecomp compare RUN ...``): the table.

Reads each run directory's ``config.json``, ``metrics.jsonl``, ``eval.jsonl`` and ``summary.json``
(written by :mod:`ddecomp.training.loop`) and reports, per run:

- cost: training seconds, microseconds per token (``elapsed_s / tokens``, evaluation and
  checkpoints excluded) and that time per token relative to the *baseline* (the first run given);
- quality: final training loss (mean of the last 10% of steps: a single step's loss depends on its
  bucket length), final validation loss (mean over context lengths, and at the longest length);
- time to quality: the training seconds at which the run's validation loss (mean over lengths)
  first reaches the baseline's final value, linearly interpolated between evaluations, and its
  ratio to the baseline's total time. ``< 1`` means the run got there faster; no value means it
  never did (evaluate more often with ``--eval-every`` for a finer answer). A run evaluated only
  at its end has no time-to-loss at all (its one evaluation is its whole length, which would
  read as a ratio of its run time): the row says so in ``time_to_base_val_note`` instead, as it
  does when the baseline has no evaluation.

Runs are comparable when they use the same prepared data and model (checked: a different dataset
fingerprint or model size is refused) and evaluate the same held-out rows (they do: the choice is
seeded by the dataset only, :func:`ddecomp.training.evaluate.eval_rows`).

Retrieval tasks (``RUN/eval_<task>.json``, written by ``ddecomp eval``) are read with the run and
tabulated by :func:`format_retrieval`, accuracy per context length.

``--plot`` draws the same runs with :func:`ddecomp.reporting.plots.plot_runs`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ddecomp.errors import UserError
from ddecomp.io import read_json
from ddecomp.reporting.retrieval import format_tasks, load_tasks
from ddecomp.training.runlog import load_jsonl


@dataclass(frozen=True)
class Run:
    name: str
    config: dict[str, Any]
    metrics: list[dict[str, Any]]
    evals: list[dict[str, Any]]
    summary: dict[str, Any]
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)  # RUN/eval_<task>.json

    @property
    def method(self) -> str:
        return str(self.config["train"]["method"])

    def column(self, key: str) -> np.ndarray:
        return np.array([m[key] for m in self.metrics], dtype=np.float64)


def load_run(path: str | Path) -> Run:
    p = Path(path)
    for f in ("config.json", "metrics.jsonl"):
        if not (p / f).is_file():
            raise UserError(f"{p}: no {f}; pass a run directory written by `ddecomp train`")
    metrics = load_jsonl(p / "metrics.jsonl")
    if not metrics:
        raise UserError(f"{p}/metrics.jsonl is empty: the run has not finished a step")
    summary = _read_object(p / "summary.json") if (p / "summary.json").is_file() else {}
    evals = load_jsonl(p / "eval.jsonl") if (p / "eval.jsonl").is_file() else []
    config = _read_object(p / "config.json")
    return Run(p.name or str(p), config, metrics, evals, summary, load_tasks(p))


def _read_object(path: Path) -> dict[str, Any]:
    try:
        obj = read_json(path)
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: unreadable ({e}); pass a run written by `ddecomp train`") from e
    if not isinstance(obj, dict):
        raise UserError(f"{path}: not a JSON object; pass a run written by `ddecomp train`")
    return obj


def time_to_reach(run: Run, target: float) -> float | None:
    """Training seconds at which the run's mean validation loss first reaches ``target``."""
    prev_t, prev_v = 0.0, None
    for e in run.evals:
        t, v = float(e["elapsed_s"]), float(e["val_loss_mean"])
        if v <= target:
            if prev_v is None or prev_v == v:
                return t
            return prev_t + (t - prev_t) * (prev_v - target) / (prev_v - v)
        prev_t, prev_v = t, v
    return None


def compare(runs: list[Run]) -> list[dict[str, Any]]:
    """One row per run (see the module docstring); the first run is the baseline."""
    if not runs:
        raise UserError("compare needs at least one run directory")
    base = runs[0]
    for r in runs[1:]:
        for key in ("fingerprint",):
            a, b = base.config["dataset"][key], r.config["dataset"][key]
            if a != b:
                raise UserError(
                    f"{r.name} trained on another dataset ({key} {b[:12]}) than {base.name} "
                    f"({a[:12]}); compare runs on the same prepared data"
                )
        if r.config["train"]["size"] != base.config["train"]["size"]:
            raise UserError(
                f"{r.name} is model size {r.config['train']['size']}, {base.name} is "
                f"{base.config['train']['size']}; compare runs of one model size"
            )
    base_final = base.evals[-1]["val_loss_mean"] if base.evals else None
    base_time = base.column("elapsed_s")[-1]
    base_us = 1e6 * base_time / base.metrics[-1]["tokens"]
    rows = []
    for r in runs:
        elapsed = float(r.column("elapsed_s")[-1])
        tokens = int(r.metrics[-1]["tokens"])
        loss = r.column("loss")
        tail = loss[-max(1, len(loss) // 10) :]
        fe = r.evals[-1] if r.evals else None
        note = _reach_note(base, r)
        reach = time_to_reach(r, base_final) if note is None and base_final is not None else None
        us = 1e6 * elapsed / tokens
        rows.append(
            {
                "run": r.name,
                "method": r.method,
                "steps": len(r.metrics),
                "tokens": tokens,
                "train_s": elapsed,
                "us_per_token": us,
                "time_per_token_vs_base": us / base_us,
                "mean_seq_len": float(r.column("seq_len").mean()),
                "train_loss": float(tail.mean()),
                "val_loss": fe["val_loss_mean"] if fe else None,
                "val_loss_longest": fe["val_loss"][str(fe["position"]["seq_len"])] if fe else None,
                "time_to_base_val_s": reach,
                "time_to_base_val_ratio": reach / base_time if reach is not None else None,
                "time_to_base_val_note": note,
                "retrieval": {t: res["accuracy_by_length"] for t, res in r.tasks.items()},
            }
        )
    return rows


def _reach_note(base: Run, run: Run) -> str | None:
    """Why a time to the baseline's loss cannot be computed for ``run``, or None when it can."""
    if not base.evals:
        return (
            f"no time to the baseline's loss: {base.name} has no evaluation (prepare the data "
            "with --val-fraction)"
        )
    if len(run.evals) < 2:
        return (
            f"no time to the baseline's loss for {run.name}: it was evaluated only at its end; "
            "train with --eval-every N (e.g. a quarter of its steps) to measure one"
        )
    return None


def format_table(rows: list[dict[str, Any]]) -> str:
    """A plain-text (Markdown) table of :func:`compare` rows."""

    def f(v: Any, spec: str) -> str:
        return "-" if v is None else format(v, spec)

    head = (
        "| run | method | tokens | train s | us/token | vs base | mean L | train loss | val loss "
        "| val @longest | time to base val | ratio |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(
            f"| {r['run']} | {r['method']} | {r['tokens']:,} | {r['train_s']:.1f} | "
            f"{r['us_per_token']:.1f} | {r['time_per_token_vs_base']:.3f} | "
            f"{r['mean_seq_len']:.0f} | {r['train_loss']:.4f} | {f(r['val_loss'], '.4f')} | "
            f"{f(r['val_loss_longest'], '.4f')} | {f(r['time_to_base_val_s'], '.1f')} | "
            f"{f(r['time_to_base_val_ratio'], '.3f')} |"
        )
    notes = dict.fromkeys(r["time_to_base_val_note"] for r in rows if r["time_to_base_val_note"])
    lines += [f"note: {n}" for n in notes]
    return "\n".join(lines)


def format_retrieval(runs: list[Run]) -> str:
    """The ``ddecomp eval`` results of the runs, one table per task (empty if none has one)."""
    return format_tasks([(r.name, r.tasks) for r in runs])
