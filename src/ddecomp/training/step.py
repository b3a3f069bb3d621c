"""One optimizer step: what the training loop runs for every method and step costs time.

:func:`train_step`: forward (bf16 autocast on CUDA, :func:`autocast_for`), cross entropy summed
in float32, backward of the loss scaled to a global token mean (so DDP's gradient mean equals the
single-process gradient of the global batch), gradient clipping, AdamW, schedule. One function
serves :func:`ddecomp.training.loop.train` and :func:`ddecomp.training.stepcost.measure_step_costs`,
so a priced step is exactly a trained one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ddecomp.loading.protocols import IGNORE_INDEX

if TYPE_CHECKING:
    from ddecomp.training.attention import DocMask


def autocast_for(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on CUDA; full precision elsewhere (CPU runs are the exact reference)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train_step(
    model: torch.nn.Module,
    params: Iterable[Tensor],
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler | None,
    batch: tuple[Tensor, Tensor, Tensor | None, DocMask | None],
    global_targets: Tensor,
    world_size: int,
    grad_clip: float,
) -> tuple[Tensor, Tensor]:
    """Forward, backward and optimizer step on ``batch = (x, y, position_ids, mask)``.

    The loss is summed over this rank's targets and scaled by ``world_size / global_targets``, so
    DDP's gradient mean equals the single-process gradient of the global batch. Returns the
    detached summed loss and the gradient norm before clipping (both on the device, unsynced).
    """
    x, y, pos, mask = batch
    with autocast_for(x.device):
        logits = model(x, pos, mask)
    loss_sum = torch.nn.functional.cross_entropy(
        logits.flatten(0, 1).float(), y.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
    )
    (loss_sum * (world_size / global_targets)).backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(params, grad_clip)
    opt.step()
    if sched is not None:
        sched.step()
    opt.zero_grad(set_to_none=True)
    return loss_sum.detach(), grad_norm
