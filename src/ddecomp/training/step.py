"""One optimizer step: what the training loop runs for every method and step costs time.

:func:`train_step`: forward (bf16 autocast on CUDA, :func:`autocast_for`), cross entropy summed
in float32, backward of the loss scaled to a global token mean (so DDP's gradient mean equals the
single-process gradient of the global batch), gradient clipping, AdamW, schedule. Given a list of
micro-batches (:mod:`ddecomp.training.microbatch`) it runs forward and backward per micro-batch,
each scaled by the same global factor, so the accumulated gradient is the unsplit step's; under
DDP only the last backward all-reduces (``no_sync`` before it). One function
serves :func:`ddecomp.training.loop.train` and :func:`ddecomp.training.stepcost.measure_step_costs`,
so a priced step is exactly a trained one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel

from ddecomp.errors import UserError
from ddecomp.loading.protocols import IGNORE_INDEX, Batch
from ddecomp.training.model import z_loss_sum

if TYPE_CHECKING:
    from ddecomp.training.attention import DocMask


def check_ids(batch: Batch, vocab_size: int, step: int) -> None:
    """Refuse a batch holding an id the model has no embedding for, in one line (the embedding
    raises an ``IndexError`` on a CPU, a device-side assert on CUDA): a manifest whose
    ``tokenizer.vocab_size`` was edited, or data beyond its tokenizer. One max over the batch
    on the host per step (~1 ms per million tokens)."""
    top = max(int(batch["input_ids"].max()), int(batch["labels"].max()))
    if top >= vocab_size:
        raise UserError(
            f"step {step}: token id {top} is not below the vocabulary size {vocab_size} the "
            "model was built with (the dataset manifest's tokenizer.vocab_size); the manifest "
            "was edited or the data holds ids beyond its tokenizer: run `ddecomp verify DIR`"
        )


MicroBatch = tuple[Tensor, Tensor, "Tensor | None", "DocMask | None"]
"""``(input_ids, labels, position_ids, doc mask)`` on the device."""


def autocast_for(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on CUDA; full precision elsewhere (CPU runs are the exact reference)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def row_losses(logp: Tensor, y: Tensor) -> Tensor:
    """Each row's summed cross entropy from the flattened log-probabilities ``logp``
    (``[rows * L, vocab]``) and the targets ``y`` (``[rows, L]``; ignored ones add 0)."""
    keep = y.flatten() != IGNORE_INDEX
    picked = logp.gather(1, y.flatten().clamp(min=0).unsqueeze(1)).squeeze(1)
    return -torch.where(keep, picked, 0.0).view(y.shape[0], -1).sum(dim=1)


def train_step(
    model: torch.nn.Module,
    params: Iterable[Tensor],
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler | None,
    batch: MicroBatch | Sequence[MicroBatch],
    global_targets: Tensor,
    world_size: int,
    grad_clip: float,
    z_loss: float = 0.0,
    row_loss: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Forward, backward and optimizer step on ``batch = (x, y, position_ids, mask)``, or on a
    list of such micro-batches (one step, gradients accumulated).

    The loss is summed over this rank's targets and scaled by ``world_size / global_targets``, so
    DDP's gradient mean equals the single-process gradient of the global batch; micro-batches use
    the same scale, never their own target counts. Returns the detached summed loss and the
    gradient norm before clipping (both on the device, unsynced). ``z_loss > 0`` adds
    ``z_loss x logsumexp(logits)^2`` per target to what is differentiated (the same scale, so a
    mean over the step's targets); the returned loss stays the cross entropy alone. ``row_loss``
    (float32 ``[rows]`` of the whole batch, micro-batches in order) receives each row's summed
    loss, for per-source metrics (:mod:`ddecomp.training.sources`).
    """
    micro = [batch] if isinstance(batch, tuple) else list(batch)
    assert micro, "a step needs at least one micro-batch"
    scale = world_size / global_targets
    loss_sum = torch.zeros((), dtype=torch.float32, device=micro[0][0].device)
    done = 0  # rows of row_loss filled
    for i, (x, y, pos, mask) in enumerate(micro):
        last = i == len(micro) - 1
        # DDP all-reduces in the last backward only; the earlier ones accumulate locally
        sync: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
        if isinstance(model, DistributedDataParallel) and not last:
            sync = model.no_sync()
        with sync:
            with autocast_for(x.device):
                logits = model(x, pos, mask)
            # cross_entropy is log_softmax then nll_loss; spelled out, the per-row losses are a
            # gather from the log-probabilities it computes anyway (reduction="none" and a sum
            # instead cost 4% of a tiny-model CPU step, benchmarks/bench_sources.py)
            logp = torch.nn.functional.log_softmax(logits.flatten(0, 1).float(), dim=-1)
            part = torch.nn.functional.nll_loss(
                logp, y.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
            )
            if row_loss is not None:
                rows = row_losses(logp.detach(), y)
                row_loss[done : done + rows.numel()] = rows
                done += rows.numel()
            total = part + z_loss * z_loss_sum(logits, y) if z_loss else part
            (total * scale).backward()
        loss_sum += part.detach()
    grad_norm = torch.nn.utils.clip_grad_norm_(params, grad_clip)
    opt.step()
    if sched is not None:
        sched.step()
    opt.zero_grad(set_to_none=True)
    return loss_sum, grad_norm
