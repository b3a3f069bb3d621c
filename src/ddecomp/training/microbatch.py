"""Micro-batches: one rank's batch of a step cut into row slices, with the loss normalised once.

At 8192 tokens a 1B model cannot hold a rank's whole share of a step in one forward; the
reference release splits each bucket batch into ``accum_freq`` micro-batches. Here the cut is in
tokens: ``micro_batch_tokens`` gives ``max(1, micro_batch_tokens // L)`` rows per micro-batch at
length ``L`` (a row is one document piece and is never cut), the last one taking what remains.

The normalisation is the part hand-written accumulation gets wrong. The step's loss is the sum of
every micro-batch's *summed* cross entropy divided by the step's targets (all ranks): each
micro-batch's backward scales its sum by ``world_size / global_targets``
(:func:`ddecomp.training.step.train_step`), so the accumulated gradient equals the unsplit step's
to float rounding. Averaging per-micro-batch means instead weights a target by ``1 / targets in
its micro-batch``, which differs as soon as micro-batches hold different numbers of targets
(padding, masked labels, an uneven last slice).

:func:`row_slices` is the cut; :func:`split_batch` applies it to a loader's :class:`Batch` for
users' own loops (``cu_seqlens`` is re-based per slice; a ``"flat"`` batch ``[1, T]`` is cut at
multiples of ``seq_len`` into ``[1, n * seq_len]`` slices, :mod:`ddecomp.loading.flat`); the
reference trainer cuts the device copy of the batch instead, after its one host-to-device copy.
"""

from __future__ import annotations

import torch

from ddecomp.errors import UserError
from ddecomp.loading.protocols import Batch


def row_slices(rows: int, seq_len: int, micro_batch_tokens: int | None) -> list[slice]:
    """Row slices of a ``[rows, seq_len]`` batch, at most ``micro_batch_tokens`` tokens each
    (``None``: one slice, the whole batch). A row longer than ``micro_batch_tokens`` cannot be
    cut (it is one document piece): ask for at least ``seq_len`` tokens."""
    if micro_batch_tokens is None:
        return [slice(0, rows)]
    if isinstance(micro_batch_tokens, bool) or not isinstance(micro_batch_tokens, int):
        raise UserError(f"micro_batch_tokens {micro_batch_tokens!r} must be an integer")
    if micro_batch_tokens < seq_len:
        raise UserError(
            f"micro_batch_tokens {micro_batch_tokens} is less than one row of {seq_len} tokens; "
            f"rows are never cut: use at least {seq_len} (the longest sequence)"
        )
    per = micro_batch_tokens // seq_len
    return [slice(a, min(a + per, rows)) for a in range(0, rows, per)]


def slice_cu_seqlens(cu_seqlens: torch.Tensor, rows: slice, seq_len: int) -> torch.Tensor:
    """The document boundaries of rows ``rows`` of a flattened ``cu_seqlens``, from 0: the
    boundaries inside the slice plus its two ends (rows are separate sequences, so a row end is
    always a boundary)."""
    lo, hi = rows.start * seq_len, rows.stop * seq_len
    inner = cu_seqlens[(cu_seqlens > lo) & (cu_seqlens < hi)]
    ends = torch.tensor([lo, hi], dtype=cu_seqlens.dtype)
    out, _ = torch.sort(torch.cat([ends, inner]))
    return out - lo


def split_batch(batch: Batch, micro_batch_tokens: int | None) -> list[Batch]:
    """``batch`` as micro-batches of at most ``micro_batch_tokens`` tokens (views; see
    :func:`row_slices`). Sum the micro-batches' summed losses and divide by the step's targets
    (``(labels != IGNORE_INDEX).sum()`` of the whole batch, all ranks), never by a micro-batch's
    own."""
    L = batch["seq_len"]
    x = batch["input_ids"]
    flat = x.shape[1] != L  # [1, T]: cut at sequence boundaries, each slice again [1, n * L]
    rows = x.numel() // L

    def cut(t: torch.Tensor, r: slice) -> torch.Tensor:
        return t.reshape(rows, L)[r].reshape(1, -1) if flat else t[r]

    out: list[Batch] = []
    for r in row_slices(rows, L, micro_batch_tokens):
        mb: Batch = {
            "input_ids": cut(x, r),
            "labels": cut(batch["labels"], r),
            "seq_len": L,
            "step": batch["step"],
            "epoch": batch["epoch"],
        }
        if "cu_seqlens" in batch:
            mb["cu_seqlens"] = slice_cu_seqlens(batch["cu_seqlens"], r, L)
            mb["max_seqlen"] = batch["max_seqlen"]
        if "position_ids" in batch:
            mb["position_ids"] = cut(batch["position_ids"], r)
        out.append(mb)
    return out
