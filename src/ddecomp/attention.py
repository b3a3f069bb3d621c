"""Causal self-attention, with or without a document mask.

Three paths, one function (:func:`attend`), all on ``q, k, v`` of shape ``[B, H, L, hd]``:

- **causal** (``mask is None``): ``F.scaled_dot_product_attention(..., is_causal=True)``. This is
  what DD and plain concat-and-chunk use: every row is one document piece (DD) or a stream cut
  (concat), and PyTorch picks its flash / memory-efficient kernel.
- **document mask on GPU**: flex attention with a block mask built from per-token document ids.
  Blocks of 128x128 that lie entirely outside every document are skipped, so the attention cost
  falls with the documents' lengths (the paper's Baseline-8k+DM / Pack-8k+DM). ``flex_attention``
  is compiled once per process (uncompiled it falls back to a dense reference implementation).
- **document mask on CPU**: SDPA with a dense boolean ``[B, 1, L, L]`` mask (``same document and
  key <= query``). Memory is ``B * L^2`` bytes, e.g. 8 MiB at ``B = 8, L = 1024``; fine for the
  ``tiny`` and ``small`` CPU runs this path exists for, and exact (it is the reference the GPU
  path is checked against).

A document mask is described by ``cu_seqlens`` as the loaders hand it out: int32 boundaries of the
documents in the *flattened* ``[B * L]`` token stream, ``0 = c_0 < c_1 < ... < c_n = B * L``
(flash-attention varlen convention). :func:`doc_ids_from_cu_seqlens` turns that into a ``[B, L]``
document id per token; a token attends to key ``j`` of its row iff ``j <= i`` and both carry the
same id. A document that crosses a row boundary of the flattened stream is thus also cut at the
row boundary, as it must be: rows are separate sequences.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

_FLEX: dict[str, Any] = {}  # the compiled flex_attention, built on first GPU use


@dataclass(frozen=True)
class DocMask:
    """Per-batch document structure for masked attention.

    ``doc_ids``: int32 ``[B, L]``; ``block_mask``: a flex-attention ``BlockMask`` (GPU) or None;
    ``dense``: bool ``[B, 1, L, L]`` (CPU) or None. Build with :func:`make_doc_mask`.
    """

    doc_ids: Tensor
    block_mask: Any | None = None
    dense: Tensor | None = None


def doc_pairs(cu_seqlens: Tensor, batch: int, seq_len: int) -> int:
    """Attended (query, key) pairs under a document mask: ``sum n (n + 1) / 2`` over the
    documents of ``cu_seqlens``, each also cut at row boundaries (computed on the host)."""
    cu = cu_seqlens.detach().cpu().to(torch.int64)
    rows = torch.arange(0, batch * seq_len + 1, seq_len, dtype=torch.int64)
    bounds = torch.unique(torch.cat([cu, rows]))  # sorted
    n = bounds[1:] - bounds[:-1]
    return int((n * (n + 1) // 2).sum())


def doc_ids_from_cu_seqlens(cu_seqlens: Tensor, batch: int, seq_len: int) -> Tensor:
    """Document id of every token, ``[batch, seq_len]`` int32, from flattened ``cu_seqlens``."""
    cu = cu_seqlens.to(torch.int64)
    total = batch * seq_len
    assert cu.ndim == 1, f"cu_seqlens must be 1-D, got shape {tuple(cu.shape)}"
    assert int(cu[0]) == 0, f"cu_seqlens must start at 0, got {int(cu[0])}"
    assert int(cu[-1]) == total, f"cu_seqlens must end at B*L={total}, got {int(cu[-1])}"
    pos = torch.arange(total, device=cu.device)
    ids = torch.searchsorted(cu[1:], pos, right=True)
    return ids.view(batch, seq_len).to(torch.int32)


def make_doc_mask(cu_seqlens: Tensor, batch: int, seq_len: int, device: torch.device) -> DocMask:
    """Build the mask for ``device``: a flex block mask on CUDA, a dense bool mask elsewhere."""
    doc = doc_ids_from_cu_seqlens(cu_seqlens.to(device), batch, seq_len)
    if device.type == "cuda":
        from torch.nn.attention.flex_attention import create_block_mask

        def mask_mod(b: Tensor, h: Tensor, q: Tensor, kv: Tensor) -> Tensor:
            return (doc[b, q] == doc[b, kv]) & (q >= kv)

        bm = create_block_mask(mask_mod, batch, None, seq_len, seq_len, device=device)
        return DocMask(doc_ids=doc, block_mask=bm)
    causal = torch.ones(seq_len, seq_len, dtype=torch.bool, device=device).tril()
    dense = (doc[:, :, None] == doc[:, None, :]) & causal
    return DocMask(doc_ids=doc, dense=dense[:, None])


def attend(q: Tensor, k: Tensor, v: Tensor, mask: DocMask | None = None) -> Tensor:
    """Causal attention over ``[B, H, L, hd]`` tensors, restricted to documents when ``mask``."""
    if mask is None:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    if mask.block_mask is not None:
        if "fn" not in _FLEX:
            from torch.nn.attention.flex_attention import flex_attention

            _FLEX["fn"] = torch.compile(flex_attention, dynamic=False)
        out: Tensor = _FLEX["fn"](q, k, v, block_mask=mask.block_mask)
        return out
    assert mask.dense is not None
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask.dense)
