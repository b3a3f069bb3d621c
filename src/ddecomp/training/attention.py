"""Causal self-attention, with or without a document mask.

Three paths, one function (:func:`attend`), all on ``q, k, v`` of shape ``[B, H, L, hd]``:

- **causal** (``mask is None``): ``F.scaled_dot_product_attention(..., is_causal=True)``. This is
  what DD and plain concat-and-chunk use: every row is one document piece (DD) or a stream cut
  (concat), and PyTorch picks its flash / memory-efficient kernel.
- **document mask on GPU**: flex attention with a block mask built from per-token document ids.
  Blocks of 128x128 that lie entirely outside every document are skipped, so the attention cost
  falls with the documents' lengths (the paper's Baseline-8k+DM / Pack-8k+DM). ``flex_attention``
  is compiled once per process (uncompiled it falls back to a dense reference implementation); a
  new mask per step does not recompile it (tested). The block mask is built directly from the
  documents' boundaries (:func:`flex_block_mask`) in ``O(B * (L / 128)^2)``, not by evaluating
  the mask on all ``B * L^2`` pairs as ``create_block_mask`` does: at ``B = 8, L = 8192`` that
  would materialise 512 MiB every step (1.6 s per step on the CPU here, measured 2026-11-27).
- **flat layout** (:func:`make_flat_mask`, ``[1, T]`` streams of sequences): the same masks
  over the whole stream (flex on GPU; dense on the CPU when compiled, so the graph does not
  depend on the sequence length), or eagerly on the CPU attention per sequence (``chunk``).
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
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from ddecomp.errors import UserError

_FLEX: dict[str, Any] = {}  # the compiled flex_attention, built on first GPU use
FLEX_BLOCK = 128  # flex attention's default sparse block size (tokens per tile side)


@dataclass(frozen=True)
class DocMask:
    """Per-batch document structure for masked attention.

    ``doc_ids``: int32 ``[B, L]``; ``block_mask``: a flex-attention ``BlockMask`` (GPU) or None;
    ``dense``: bool ``[B, 1, L, L]`` (CPU) or None. Build with :func:`make_doc_mask`.
    ``chunk``: the flat layout's sequence length on the CPU's eager path (:func:`make_flat_mask`):
    attention runs per ``chunk`` tokens of the ``[1, T]`` stream, ``dense`` then ``[T / chunk,
    1, chunk, chunk]`` (pieces inside the sequences) or None (plain causal sequences).
    """

    doc_ids: Tensor
    block_mask: Any | None = None
    dense: Tensor | None = None
    chunk: int | None = None


def _check_cu_seqlens(cu: Tensor, total: int) -> None:
    assert cu.ndim == 1, f"cu_seqlens must be 1-D, got shape {tuple(cu.shape)}"
    assert int(cu[0]) == 0, f"cu_seqlens must start at 0, got {int(cu[0])}"
    assert int(cu[-1]) == total, f"cu_seqlens must end at B*L={total}, got {int(cu[-1])}"


def doc_ids_from_cu_seqlens(cu_seqlens: Tensor, batch: int, seq_len: int) -> Tensor:
    """Document id of every token, ``[batch, seq_len]`` int32, from flattened ``cu_seqlens``
    (checked on a host copy: a synchronisation for a GPU tensor)."""
    _check_cu_seqlens(cu_seqlens.cpu(), batch * seq_len)
    return _doc_ids(cu_seqlens, batch, seq_len)


def _doc_ids(cu_seqlens: Tensor, batch: int, seq_len: int) -> Tensor:
    cu = cu_seqlens.to(torch.int64)
    pos = torch.arange(batch * seq_len, device=cu.device)
    ids = torch.searchsorted(cu[1:], pos, right=True)
    return ids.view(batch, seq_len).to(torch.int32)


def flex_block_mask(doc: Tensor, block: int = FLEX_BLOCK) -> Any:
    """Flex-attention ``BlockMask`` of the causal document mask of ``doc [B, L]`` (document ids,
    non-decreasing along each row), built from block boundaries alone.

    With ``first``/``last`` the document id at the first/last token of each ``block``-token
    tile, query tile ``i`` and key tile ``j`` relate as follows. ``j > i``: empty (causal).
    ``j == i``: partial (the causal triangle). ``j < i``: every key precedes every query, and ids
    never decrease, so the tile holds a pair of one document iff ``last[j] == first[i]``, and all
    its pairs are iff ``first[j] == last[i]`` (one document spans both tiles; a padded last tile is
    never full). Partial tiles get ``mask_mod`` evaluated per pair; full ones skip it. The index
    lists are ordered as ``create_block_mask`` orders them (tested equal to it).
    """
    from torch.nn.attention.flex_attention import BlockMask

    L = doc.shape[1]
    n = -(-L // block)
    starts = torch.arange(n, device=doc.device) * block
    first = doc[:, starts]  # [B, n]
    last = doc[:, torch.clamp(starts + block, max=L) - 1]
    i = torch.arange(n, device=doc.device)
    below = (i[None, :] < i[:, None])[None]  # [1, n_q, n_kv]: key tile strictly before query tile
    touch = below & (last[:, None, :] == first[:, :, None])
    complete = (starts + block <= L)[None, :, None]
    full = below & (first[:, None, :] == last[:, :, None]) & complete
    partial = (touch & ~full) | torch.eye(n, dtype=torch.bool, device=doc.device)[None]

    def ordered(blocks: Tensor) -> tuple[Tensor, Tensor]:
        b = blocks.to(torch.int32)[:, None]  # [B, 1 head, n_q, n_kv]
        idx = torch.argsort(b, dim=-1, descending=True, stable=True)
        return b.sum(-1).to(torch.int32), idx.to(torch.int32)

    def mask_mod(b: Tensor, h: Tensor, q: Tensor, kv: Tensor) -> Tensor:
        return (doc[b, q] == doc[b, kv]) & (q >= kv)

    num, idx = ordered(partial)
    full_num, full_idx = ordered(full)
    if L % block == 0:  # the default lengths; torch < 2.6 has no seq_lengths argument
        return BlockMask.from_kv_blocks(num, idx, full_num, full_idx, block, mask_mod)
    return BlockMask.from_kv_blocks(
        num, idx, full_num, full_idx, block, mask_mod, seq_lengths=(L, L)
    )


def make_doc_mask(
    cu_seqlens: Tensor,
    batch: int,
    seq_len: int,
    device: torch.device,
    kind: Literal["auto", "flex", "dense"] = "auto",
) -> DocMask:
    """Build the mask for ``device``: ``auto`` is a flex block mask on CUDA and a dense bool mask
    elsewhere (flex attention has no backward pass on CPU; its forward runs there, so tests check
    the GPU path's mask on CPU with ``kind="flex"``)."""
    _check_cu_seqlens(cu_seqlens.cpu(), batch * seq_len)  # the loader's host tensor: no sync
    doc = _doc_ids(cu_seqlens.to(device, non_blocking=True), batch, seq_len)
    if kind == "flex" or (kind == "auto" and device.type == "cuda"):
        return DocMask(doc_ids=doc, block_mask=flex_block_mask(doc))
    causal = torch.ones(seq_len, seq_len, dtype=torch.bool, device=device).tril()
    dense = (doc[:, :, None] == doc[:, None, :]) & causal
    return DocMask(doc_ids=doc, dense=dense[:, None])


DENSE_STREAM_LIMIT = 1 << 30
"""Bytes of the dense ``[T, T]`` stream mask a compiled CPU flat run may build per micro-batch."""


def check_dense_stream(total: int) -> None:
    """Refuse a dense stream mask over ``total`` tokens larger than :data:`DENSE_STREAM_LIMIT`
    (a compiled CPU run of the flat layout builds one per step), in one line."""
    if total * total > DENSE_STREAM_LIMIT:
        raise UserError(
            f"--layout flat --compile on the CPU masks attention with a dense {total} x {total} "
            f"matrix ({total * total / 2**30:.1f} GiB) per step; use --micro-batch-tokens "
            f"{int(DENSE_STREAM_LIMIT**0.5)} or less, drop --compile (exact per-sequence "
            "attention), or train on a GPU (FlexAttention)"
        )


def make_flat_mask(
    cu_seqlens: Tensor, seq_len: int, total: int, device: torch.device, compiled: bool
) -> DocMask:
    """The mask of a flat ``[1, total]`` stream of sequences of ``seq_len`` (``cu_seqlens`` at
    every multiple of it, plus any pieces inside; :mod:`ddecomp.loading.flat`): block-diagonal
    causal attention, exact on every path.

    On CUDA, or with ``compiled``, the mask is a tensor over the whole stream (flex block mask on
    CUDA, dense ``[1, 1, T, T]`` elsewhere): its shape does not depend on ``seq_len``, so a
    compiled model keeps one graph for every step. Eager on the CPU, attention runs per sequence
    (``chunk``): ``O(T * L)`` instead of the dense mask's ``O(T^2)`` (benchmarks/bench_flat.py).
    """
    if compiled or device.type == "cuda":
        if device.type != "cuda":
            check_dense_stream(total)
        return make_doc_mask(cu_seqlens, 1, total, device)
    rows = total // seq_len
    assert rows * seq_len == total, (total, seq_len)
    doc = _doc_ids(cu_seqlens.to(device), 1, total)
    if cu_seqlens.numel() == rows + 1:  # only the sequence boundaries: causal per sequence
        return DocMask(doc_ids=doc, chunk=seq_len)
    per_row = make_doc_mask(cu_seqlens, rows, seq_len, device)  # pieces inside the sequences
    return DocMask(doc_ids=doc, dense=per_row.dense, chunk=seq_len)


def attend(q: Tensor, k: Tensor, v: Tensor, mask: DocMask | None = None) -> Tensor:
    """Causal attention over ``[B, H, L, hd]`` tensors, restricted to documents when ``mask``."""
    if mask is None:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    if mask.chunk is not None:  # a flat stream [1, H, T, hd] attended as rows [T / c, H, c, hd]
        _, H, T, hd = q.shape
        c = mask.chunk

        def rows(t: Tensor) -> Tensor:
            return t.reshape(H, T // c, c, hd).transpose(0, 1)

        if mask.dense is None:
            y = F.scaled_dot_product_attention(rows(q), rows(k), rows(v), is_causal=True)
        else:
            y = F.scaled_dot_product_attention(rows(q), rows(k), rows(v), attn_mask=mask.dense)
        return y.transpose(0, 1).reshape(1, H, T, hd)
    if mask.block_mask is not None:
        if "fn" not in _FLEX:
            from torch.nn.attention.flex_attention import flex_attention

            _FLEX["fn"] = torch.compile(flex_attention, dynamic=False)
        out: Tensor = _FLEX["fn"](q, k, v, block_mask=mask.block_mask)
        return out
    assert mask.dense is not None
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask.dense)
