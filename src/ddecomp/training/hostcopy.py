"""One host-to-device copy per batch, through a pinned staging buffer.

A loader's batch is host memory: DD's ``input_ids`` and ``labels`` are the views ``buf[:, :-1]``
and ``buf[:, 1:]`` of one ``[B, L + 1]`` buffer (:mod:`ddecomp.loading.vsl`), so copying both
moves every token twice and issues two transfers. :class:`HostToDevice` finds that buffer (same
storage, labels one element after input_ids, row stride ``L + 1``), copies it once and slices on
the device. A batch whose labels are not such a view (the baselines mask labels) and
``position_ids`` are laid side by side in the same staging buffer: still one transfer
(``cu_seqlens`` goes to the mask builder, which keeps it on the host for its checks).

On CUDA the staging buffer is pinned (page-locked), so the copy is a true asynchronous DMA
(``non_blocking``); it is allocated once at the largest batch seen and reused. Before it is
refilled the previous transfer must have finished reading it: one CUDA event, whose wait is free
in the reference loop (it reads the loss back every step). On the CPU nothing is copied: the
parts are the loader's own tensors (``stage=True`` runs the staging there too, for tests).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ddecomp.loading.protocols import Batch


def shared_buffer(batch: Batch) -> Tensor | None:
    """The ``[B, L + 1]`` buffer whose views are ``input_ids`` and ``labels``, else ``None``."""
    x, y = batch["input_ids"], batch["labels"]
    if x.dim() != 2 or x.shape != y.shape or x.dtype != y.dtype:
        return None
    B, L = x.shape
    same = x.untyped_storage().data_ptr() == y.untyped_storage().data_ptr()
    if not same or y.data_ptr() != x.data_ptr() + x.element_size():
        return None
    if B > 1 and (x.stride() != (L + 1, 1) or y.stride() != (L + 1, 1)):
        return None
    return x.as_strided((B, L + 1), (L + 1, 1))


class HostToDevice:
    """Moves each batch's token tensors to ``device`` in one copy (see the module docstring)."""

    def __init__(self, device: torch.device, stage: bool | None = None) -> None:
        self.device = device
        # staging: on CUDA (pinned); on the CPU only when asked (tests run the same slicing)
        self.stage = device.type == "cuda" if stage is None else stage
        self.copies = 0  # host-to-device transfers issued (one per batch)
        self._stage: Tensor | None = None
        self._done: torch.cuda.Event | None = None

    def parts(self, batch: Batch) -> tuple[list[Tensor], bool]:
        """What crosses to the device: the shared buffer (``True``), or input_ids and labels
        apart; then ``position_ids`` when the batch has them."""
        buf = shared_buffer(batch)
        out = [buf] if buf is not None else [batch["input_ids"], batch["labels"]]
        if "position_ids" in batch:
            out.append(batch["position_ids"])
        return out, buf is not None

    def __call__(self, batch: Batch) -> tuple[Tensor, Tensor, Tensor | None]:
        """``(input_ids, labels, position_ids or None)`` on the device; input_ids contiguous (a
        compiled model guards on strides), labels a view."""
        parts, shared = self.parts(batch)
        moved = self._move(parts)
        if shared:
            x, y, rest = moved[0][:, :-1].contiguous(), moved[0][:, 1:], moved[1:]
        else:
            x, y, rest = moved[0].contiguous(), moved[1], moved[2:]
        return x, y, (rest[0].contiguous() if rest else None)

    def _move(self, parts: list[Tensor]) -> list[Tensor]:
        if not self.stage:  # the CPU: no copy at all (elsewhere, unstaged: one per part)
            return [p.to(self.device, non_blocking=True) for p in parts]
        cuda = self.device.type == "cuda"
        assert all(p.dtype == torch.int64 for p in parts), [p.dtype for p in parts]
        sizes = [p.numel() for p in parts]
        total = sum(sizes)
        if self._done is not None:
            self._done.synchronize()  # the last transfer has finished reading the stage
        if self._stage is None or self._stage.numel() < total:
            self._stage = torch.empty(total, dtype=torch.int64, pin_memory=cuda)
        stage = self._stage[:total]
        for p, seg in zip(parts, stage.split(sizes), strict=True):
            seg.view(p.shape).copy_(p)
        dev = stage.to(self.device, non_blocking=cuda, copy=True)  # the stage is reused
        self.copies += 1
        if cuda:
            self._done = torch.cuda.Event()
            self._done.record()
        return [seg.view(p.shape) for p, seg in zip(parts, dev.split(sizes), strict=True)]
