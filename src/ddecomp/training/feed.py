"""What a training run feeds its steps: batches epoch after epoch, and each step's micro-batches.

- :func:`batches_forever`: a loader's batches across epochs; a resumed loader first finishes
  the epoch its state is in, and a loader with no full step is one line (not an empty loop).
- :func:`micro_batches`: one step's device tensors cut into row slices of at most
  ``--micro-batch-tokens`` (in the ``"flat"`` layout at multiples of ``L``, so no sequence is
  cut), each with its own attention mask: the document mask of packed or document-masked rows,
  or the block-diagonal mask of the flat stream.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from ddecomp.errors import UserError
from ddecomp.loading.base import StepLoader
from ddecomp.loading.protocols import Batch
from ddecomp.training.attention import make_doc_mask, make_flat_mask
from ddecomp.training.config import TrainConfig
from ddecomp.training.microbatch import row_slices, slice_cu_seqlens
from ddecomp.training.step import MicroBatch


def batches_forever(loader: StepLoader, epoch: int, resumed: bool) -> Iterator[Batch]:
    """Batches forever, epoch after epoch; a resumed loader continues its epoch first."""
    while True:
        if not resumed:
            loader.set_epoch(epoch)
        resumed = False
        served = 0
        for batch in loader:
            served += 1
            yield batch
        if served == 0 and len(loader) == 0:
            raise UserError(
                f"the loader has no full step of {loader.tokens_per_step} tokens in epoch {epoch}; "
                "lower --tokens-per-step or prepare more data"
            )
        epoch += 1


def micro_batches(
    batch: Batch, x: Tensor, y: Tensor, pos: Tensor | None, cfg: TrainConfig, device: torch.device
) -> list[MicroBatch]:
    """The step's micro-batches: row slices (flat: at multiples of L), their own doc masks."""
    L, flat = batch["seq_len"], cfg.layout == "flat"
    slices = row_slices(x.numel() // L, L, cfg.micro_batch_tokens)
    out: list[MicroBatch] = []
    for r in slices:
        mask, n = None, r.stop - r.start
        if flat or cfg.doc_masked or "cu_seqlens" in batch:  # pack, concat-dm, DD's tail rows
            cu = batch["cu_seqlens"]
            cu = cu if len(slices) == 1 else slice_cu_seqlens(cu, r, L)
            if flat:
                mask = make_flat_mask(cu, L, n * L, device, cfg.compile)
            else:
                mask = make_doc_mask(cu, n, L, device)
        if flat:
            a, b = r.start * L, r.stop * L
            out.append((x[:, a:b], y[:, a:b], None if pos is None else pos[:, a:b], mask))
        else:
            out.append((x[r], y[r], None if pos is None else pos[r], mask))
    return out
