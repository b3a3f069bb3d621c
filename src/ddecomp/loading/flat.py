"""The ``"flat"`` layout: one rank's batch as one fixed-size token stream ``[1, T]``.

A DD step is ``B_L`` rows of length ``L`` with ``B_L * L = T`` (tokens per step / data-parallel
size) constant, so in the default ``"rows"`` layout every bucket is another tensor shape: a
compiled model builds one graph per length, CUDA graphs one capture each, and trainers that take a
fixed token stream per micro-batch (torchtitan, Megatron's THD format) cannot take DD batches.
``layout="flat"`` serves the same tokens as ``[1, T]`` at every step; the sequence structure moves
into the varlen fields flash-attention and FlexAttention read:

- ``input_ids`` / ``labels``: int64 ``[1, T]``, the rows layout's tensors flattened row after row
  (contiguous copies), nothing else changed (masked labels stay masked);
- ``position_ids``: int64 ``[1, T]``, restarting at 0 at every sequence start: every ``L`` tokens,
  and at every piece a rows batch already marks (``--tails pack`` tail rows, the ``pack`` and
  ``concat-dm`` baselines' documents), where it is the rows batch's ``position_ids`` flattened;
- ``cu_seqlens``: int32, the sequence boundaries in the stream, ``[0, L, 2L, ..., T]`` plus the
  piece boundaries the rows batch has (its ``cu_seqlens`` is already flattened over rows);
- ``max_seqlen``: a Python int, the longest sequence (``L``, or the rows batch's);
- ``seq_len`` stays the step's row length ``L`` (what attention costs follow), and every other key
  (``step``, ``epoch``, any a loader adds) is passed on unchanged.

So a flat batch is a pure function of the rows batch (:func:`to_flat`), and the plan, the loader
state, resume and the exactly-once proof are the rows layout's. The layout is *not* part of the
loader state's identity: it changes no token's order, so a state written by a rows loader resumes
a flat one (and back) at exactly the next batch. Attention must be block-diagonal over
``cu_seqlens`` (:mod:`ddecomp.training.attention`); a plain causal attention over the stream
would attend across sequences.
"""

from __future__ import annotations

from typing import Final

import torch

from ddecomp.errors import UserError
from ddecomp.loading.protocols import Batch

LAYOUTS: Final = ("rows", "flat")
"""``rows``: ``[T / L, L]`` per step (the default); ``flat``: ``[1, T]`` with ``cu_seqlens``."""


def check_layout(layout: object) -> str:
    """``layout`` if it is one of :data:`LAYOUTS`, else a one-line UserError."""
    if not isinstance(layout, str) or layout not in LAYOUTS:
        raise UserError(f"layout {layout!r} is not one of {', '.join(map(repr, LAYOUTS))}")
    return layout


def to_flat(batch: Batch) -> Batch:
    """The rows batch ``batch`` (``input_ids [B, L]``) in the flat layout (module docstring)."""
    x, y = batch["input_ids"], batch["labels"]
    B, L = x.shape
    assert L == batch["seq_len"], (tuple(x.shape), batch["seq_len"])
    T = B * L
    out: Batch = {**batch}  # every key passed on (a loader may add its own), then replaced
    out["input_ids"] = x.reshape(1, T)
    out["labels"] = y.reshape(1, T)
    if "cu_seqlens" in batch:  # already flattened over rows (every row start is a boundary)
        out["cu_seqlens"] = batch["cu_seqlens"].to(torch.int32)
        out["max_seqlen"] = int(batch["max_seqlen"])
        out["position_ids"] = batch["position_ids"].reshape(1, T)
    else:
        out["cu_seqlens"] = torch.arange(0, T + 1, L, dtype=torch.int32)
        out["max_seqlen"] = int(L)
        out["position_ids"] = torch.arange(L, dtype=torch.int64).repeat(B).reshape(1, T)
    return out
