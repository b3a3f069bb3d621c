"""The cost of one train step at fixed shapes: what DD's ideal step cost is predicted from.

:func:`measure_step_costs` times :func:`ddecomp.training.step.train_step`, the loop's own step,
on random tokens at one fixed ``[tokens_per_step / L, L]`` shape per length, with no loader, no
shape change and no logging, on a fresh model. The medians are the per-length step costs: DD's
*ideal* cost is ``mean(cost[L_s])`` over the
lengths ``L_s`` of its steps, and ``measured / ideal - 1`` in the real loop is what the loader,
changing shapes and the loop's bookkeeping add. Timing reads the loss back every step, as the
loop does, so both include one device synchronisation per step.

On an H100 (docs/method.md section 6) one 160M step at 65,536 tokens costs 0.193 s at L = 256 and
0.269 s at L = 8192: the spread DD's mixture of lengths is priced by.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import torch

from ddecomp.errors import UserError
from ddecomp.loading.protocols import IGNORE_INDEX
from ddecomp.training.builders import build_optimizer
from ddecomp.training.microbatch import row_slices
from ddecomp.training.model import GPT, model_config
from ddecomp.training.step import train_step

if TYPE_CHECKING:
    from ddecomp.training.config import TrainConfig


def measure_step_costs(
    cfg: TrainConfig,
    vocab_size: int,
    lengths: Iterable[int],
    device: torch.device,
    *,
    warmup: int = 2,
    iters: int = 5,
    on_length: Callable[[int, int, int], None] | None = None,
) -> dict[int, dict[str, Any]]:
    """Seconds per :func:`train_step` at each length, causal attention, ``cfg.tokens_per_step``.

    A fresh model of ``cfg.size`` (seeded ``cfg.seed``) and AdamW as in training; ``warmup``
    untimed steps per length (allocation, kernel selection, compilation with ``cfg.compile``),
    then ``iters`` timed ones; ``on_length(L, i, n)`` is called before the i-th of n lengths
    (progress: a large model takes minutes per length).
    Returns ``{L: {"median_s", "min_s", "samples_s", "rows"}}``.
    """
    if warmup < 0 or iters < 1:
        raise UserError(f"step costs need warmup >= 0 and iters >= 1, got {warmup} and {iters}")
    with torch.random.fork_rng(devices=[]):  # seeded weights; the caller's RNG is untouched
        torch.manual_seed(cfg.seed)
        raw = GPT(model_config(cfg.size, vocab_size, **cfg.model_kwargs())).to(device)
    model: torch.nn.Module = raw
    if cfg.compile:
        model = torch.compile(raw, dynamic=False)  # type: ignore[assignment]
    opt = build_optimizer(raw, cfg, device)
    g = torch.Generator().manual_seed(cfg.seed)
    out: dict[int, dict[str, Any]] = {}
    todo = sorted(set(lengths))
    for i, L in enumerate(todo, 1):
        if on_length is not None:
            on_length(L, i, len(todo))
        B = cfg.tokens_per_step // L
        assert B * L == cfg.tokens_per_step, (L, cfg.tokens_per_step)
        tokens = torch.randint(0, vocab_size, (B, L + 1), generator=g)
        x, y = tokens[:, :-1].contiguous().to(device), tokens[:, 1:].contiguous().to(device)
        n = torch.tensor(float((y != IGNORE_INDEX).sum()), dtype=torch.float64, device=device)
        # micro-batches as the loop cuts them: a priced step is a trained one
        micro = [(x[r], y[r], None, None) for r in row_slices(B, L, cfg.micro_batch_tokens)]
        samples = []
        for i in range(warmup + iters):
            t0 = time.perf_counter()
            loss, _ = train_step(
                model, raw.parameters(), opt, None, micro, n, 1, cfg.grad_clip, cfg.z_loss
            )
            float(loss)  # the loop reads the loss back every step: one sync, timed alike
            if i >= warmup:
                samples.append(time.perf_counter() - t0)
        out[L] = {
            "median_s": statistics.median(samples),
            "min_s": min(samples),
            "samples_s": samples,
            "rows": B,
        }
    return out


def ideal_step_cost(step_lengths: Iterable[int], costs: dict[int, float]) -> float:
    """Mean fixed-shape cost over a sequence of step lengths: DD's cost with nothing added."""
    ls = list(step_lengths)
    assert ls, "no steps"
    return sum(costs[int(L)] for L in ls) / len(ls)


def price_plan(
    steps_per_length: dict[int, int], costs: dict[int, float], baseline_len: int
) -> dict[str, float]:
    """An epoch's cost at fixed-shape step costs: DD's steps at their lengths, against the same
    number of steps (same tokens per step, so the same tokens) all at ``baseline_len``, as
    concat-and-chunk would take them. Seconds, and DD / baseline."""
    S = sum(steps_per_length.values())
    assert S > 0, "the plan has no steps"
    dd = sum(n * costs[int(L)] for L, n in steps_per_length.items() if n)
    base = S * costs[int(baseline_len)]
    return {"epoch_steps": S, "dd_s": dd, "baseline_s": base, "ratio": dd / base}
