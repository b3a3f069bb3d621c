"""A trained run as something to evaluate: its GPT, its held-out documents, its task results.

:func:`load_run` rebuilds the reference GPT from ``RUN/config.json`` (the model shape the run
recorded) and loads the weights of its latest checkpoint (checked by sha256, unpickled with
``weights_only``: :mod:`ddecomp.training.checkpoint`). :func:`held_out` opens the ``val`` split
of the run's dataset (each source of a blend, in order). :func:`evaluate_run` runs a task
(:mod:`ddecomp.evaluation.tasks`, :mod:`ddecomp.evaluation.scoring`) and writes
``RUN/eval_<task>.json`` atomically; ``ddecomp compare`` draws it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch

from ddecomp.errors import UserError
from ddecomp.io import read_json, write_json_atomic
from ddecomp.training.checkpoint import latest_checkpoint, load_checkpoint
from ddecomp.training.model import GPT, ModelConfig

DEFAULT_DEPTHS = (0.0, 0.25, 0.5, 0.75, 1.0)
DEFAULT_CHOICES = 4


def run_config(run: Path) -> dict[str, Any]:
    """``RUN/config.json``, or a one-line error naming what is missing."""
    path = Path(run) / "config.json"
    if not path.is_file():
        raise UserError(
            f"{run} is not a training run (no config.json); give a `ddecomp train` --out"
        )
    got: dict[str, Any] = read_json(path)
    return got


def load_run(run: Path, device: torch.device) -> tuple[GPT, dict[str, Any], int]:
    """The run's GPT in eval mode on ``device``, its config.json and the checkpoint's step."""
    config = run_config(run)
    rec = latest_checkpoint(Path(run))
    if rec is None:
        raise UserError(
            f"{run} has no checkpoint to evaluate (trained with --no-checkpoints, or stopped "
            "before the first); train it with checkpoints"
        )
    known = {f.name for f in fields(ModelConfig)}
    model = GPT(ModelConfig(**{k: v for k, v in config["model"].items() if k in known}))
    state = load_checkpoint(rec)
    model.load_state_dict(state["model"])
    return model.to(device).eval(), config, int(state["step"])


def data_roots(config: dict[str, Any], data: Sequence[str] | None = None) -> list[str]:
    """The run's dataset directories (``data`` overrides them, e.g. after a move)."""
    if data:
        return [str(d) for d in data]
    ds = config.get("dataset", {})
    if "root" in ds:
        return [str(ds["root"])]
    return [str(s["source"]) for s in ds.get("blend", {}).get("sources", [])]


def held_out(roots: Sequence[str]) -> tuple[list[Any], tuple[int, ...]]:
    """The ``val`` documents of every root (arrays, EOS last) and the special ids to avoid."""
    from ddecomp.data.dataset import open_dataset

    docs: list[Any] = []
    special: set[int] = set()
    for root in roots:
        ds = open_dataset(root, "val")
        special |= {ds.eos_id} | ({ds.bos_id} if ds.bos_id is not None else set())
        docs.extend(ds.documents())
    if not docs:
        raise UserError(
            f"{', '.join(roots)} has no validation split to build tasks from; prepare it again "
            "with --val-fraction 0.02 (or pass --data DIR of a dataset with one)"
        )
    return docs, tuple(sorted(special))


def default_lengths(max_len: int) -> list[int]:
    """Context lengths for a run trained up to ``max_len``: powers of two from
    ``max(64, max_len / 16)`` to ``max_len``."""
    lo = max(64, max_len // 16)
    out, L = [], lo
    while L <= max_len:
        out.append(L)
        L *= 2
    return out or [max_len]


def evaluate_run(
    run: Path,
    task: str,
    lengths: Sequence[int] | None = None,
    depths: Sequence[float] = DEFAULT_DEPTHS,
    samples: int = 20,
    seed: int = 0,
    choices: int = DEFAULT_CHOICES,
    device: str = "cpu",
    data: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Run ``task`` on the run's latest checkpoint; write and return ``RUN/eval_<task>.json``."""
    from ddecomp.evaluation.scoring import run_task
    from ddecomp.evaluation.tasks import TASKS, Haystack

    if task not in TASKS:
        raise UserError(f"--task {task!r} is not one of {', '.join(TASKS)}")
    if samples < 1 or choices < 2:
        raise UserError(f"--samples {samples} must be >= 1 and --choices {choices} >= 2")
    if any(not 0.0 <= d <= 1.0 for d in depths) or not depths:
        raise UserError(f"--depths {list(depths)} must be fractions in [0, 1]")
    run = Path(run)
    dev = torch.device(device)
    config = run_config(run)
    roots = data_roots(config, data)
    docs, special = held_out(roots)
    hay = Haystack.from_documents(docs, special)
    max_len = int(config.get("max_len") or config["train"].get("max_len") or 0)
    lens = list(lengths) if lengths else default_lengths(max_len)
    model, _, step = load_run(run, dev)
    t0 = time.perf_counter()
    res = run_task(model, task, hay, lens, depths, samples, seed, choices, dev)
    res.update(
        {
            "run": str(run),
            "step": step,
            "data": roots,
            "trained_max_len": max_len,
            "eval_s": time.perf_counter() - t0,
        }
    )
    write_json_atomic(run / f"eval_{task}.json", res)
    return res
