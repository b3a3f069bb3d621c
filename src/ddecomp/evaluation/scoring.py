"""Multiple choice by log-likelihood, and a task's accuracy per context length and depth.

:func:`choice_scores`: the candidates of one example are scored in one batch, each row the
prompt followed by the candidate; a candidate's score is the summed log-probability of its
``K`` tokens, each given everything before it (positions ``len(prompt) - 1 ...`` of the logits).
:func:`credit`: 1 when the right candidate alone has the highest score, ``1 / n`` when it ties
with ``n - 1`` others for the highest (the expected accuracy of breaking ties at random), else
0; so a model whose logits ignore the context scores chance, ``1 / choices``, exactly.

:func:`run_task` builds the examples (:mod:`ddecomp.evaluation.tasks`) and scores them with any
``model(input_ids [B, T]) -> logits [B, T, V]`` callable: the run's GPT
(:func:`ddecomp.evaluation.runmodel.load_run`), or a test double in the tests. Scores are
computed in float64 from float32 logits; on the CPU the result is the same on every call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ddecomp.evaluation.tasks import Example, Haystack, build_examples

LogitsFn = Callable[[Tensor], Tensor]


@torch.no_grad()
def choice_scores(model: LogitsFn, ex: Example, device: torch.device) -> np.ndarray:
    """Summed log-likelihood (float64 ``[choices]``) of each candidate after ``ex.prompt``."""
    C, K = ex.candidates.shape
    rows = np.concatenate([np.broadcast_to(ex.prompt, (C, ex.prompt.size)), ex.candidates], 1)
    x = torch.from_numpy(np.ascontiguousarray(rows[:, :-1])).to(device)
    logits = model(x)[:, -K:].float()  # the positions that predict the K candidate tokens
    logp = torch.log_softmax(logits, dim=-1).double()
    target = torch.from_numpy(ex.candidates).to(device)
    picked = logp.gather(-1, target[..., None])[..., 0]
    return picked.sum(dim=1).cpu().numpy()


def credit(scores: np.ndarray, answer: int) -> float:
    """1, ``1 / n`` for an n-way tie at the top that includes the answer, or 0."""
    top = np.flatnonzero(scores == scores.max())
    return 1.0 / top.size if answer in top else 0.0


def run_task(
    model: LogitsFn,
    task: str,
    hay: Haystack,
    lengths: Sequence[int],
    depths: Sequence[float],
    samples: int,
    seed: int,
    choices: int,
    device: torch.device,
) -> dict[str, Any]:
    """Accuracy per (length, depth), per length and overall, as a JSON-ready dict."""
    acc: dict[str, dict[str, float]] = {}
    by_length: dict[str, float] = {}
    for L in lengths:
        row: dict[str, float] = {}
        for j, d in enumerate(depths):
            exs = build_examples(task, hay, int(L), j, float(d), samples, seed, choices)
            row[f"{d:g}"] = float(
                np.mean([credit(choice_scores(model, e, device), e.answer) for e in exs])
            )
        acc[str(L)] = row
        by_length[str(L)] = float(np.mean(list(row.values())))
    return {
        "task": task,
        "lengths": [int(L) for L in lengths],
        "depths": [float(d) for d in depths],
        "samples": int(samples),
        "seed": int(seed),
        "choices": int(choices),
        "chance": 1.0 / choices,
        "examples": len(lengths) * len(depths) * int(samples),
        "accuracy": acc,
        "accuracy_by_length": by_length,
        "accuracy_mean": float(np.mean(list(by_length.values()))) if by_length else 0.0,
    }
