"""The forward pass on ddecomp's labels: every target trained once, with any causal LM.

ddecomp's labels are already the next tokens (``input_ids = row[:-1]``, ``labels = row[1:]``;
``docs/method.md`` section 2.1). An HF causal LM given ``labels=`` shifts them once more: it
drops the last target of every row and scores position ``i`` against token ``i + 2``. So the
model is called *without* labels and the loss is computed here from its logits:
``cross_entropy(logits, labels, ignore_index=-100, reduction="sum")`` in float32, position ``i``
against label ``i``. :func:`summed_loss` returns that sum; the caller divides by the global
step's targets (counted on the host copy of the batch: no device synchronisation per
micro-batch).

Models: ``ddecomp.GPT`` is called as ``model(input_ids, position_ids, doc_mask)``; anything else
as an HF causal LM, ``model(input_ids=..., position_ids=..., use_cache=False)`` returning
``.logits`` (or a tensor of logits).

**Packed tail rows** (a dataset prepared with ``--tails pack``): several document pieces share a
row, and attention must stay inside each piece. The reference GPT gets a document mask built
from ``cu_seqlens`` (:func:`ddecomp.training.attention.make_doc_mask`) and per-piece positions.
An HF model gets ``position_ids`` that restart at 0 at every piece and no ``attention_mask``:
transformers' mask builders (``masking_utils``, used by Llama and most current models, eager,
SDPA and flex) and flash-attention-2 then mask per piece. Not every model does, so
:func:`check_packed_masking` runs the model once on two packed pieces and compares the second
piece's logits with the piece run alone; a model that lets the pieces see each other is refused
in one line before training (prepare with ``--tails drop``, or use a model that masks).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ddecomp.errors import UserError
from ddecomp.loading.protocols import IGNORE_INDEX
from ddecomp.training.attention import make_doc_mask
from ddecomp.training.model import GPT


def is_reference_gpt(model: nn.Module) -> bool:
    return isinstance(model, GPT)


def logits_of(
    model: nn.Module,
    input_ids: Tensor,
    position_ids: Tensor | None = None,
    cu_seqlens: Tensor | None = None,
    gpt: bool = False,
) -> Tensor:
    """``[B, L, vocab]`` logits of ``model`` (possibly DDP-wrapped; ``gpt``: its inner module is
    the reference GPT); packed rows are masked per piece (see the module docstring)."""
    if gpt:
        B, L = input_ids.shape
        mask = None if cu_seqlens is None else make_doc_mask(cu_seqlens, B, L, input_ids.device)
        out: Tensor = model(input_ids, position_ids, mask)
        return out
    kwargs: dict[str, Tensor | bool] = {"input_ids": input_ids, "use_cache": False}
    if position_ids is not None:
        kwargs["position_ids"] = position_ids
    res = model(**kwargs)
    if isinstance(res, Tensor):
        return res
    logits: Tensor = res.logits if hasattr(res, "logits") else res[0]
    return logits


def summed_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Summed float32 cross entropy of ``logits [B, L, V]`` at ``labels [B, L]`` (no shift:
    ``labels[:, i]`` is the target of position ``i``; ``-100`` is not a target)."""
    if logits.shape[:2] != labels.shape:
        raise UserError(
            f"the model returned logits of shape {tuple(logits.shape)} for labels of shape "
            f"{tuple(labels.shape)}; it must return [batch, seq_len, vocab] logits"
        )
    return F.cross_entropy(
        logits.flatten(0, 1).float(),
        labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )


@torch.no_grad()
def check_packed_masking(model: nn.Module, vocab_size: int, atol: float = 1e-4) -> None:
    """Refuse an HF model that does not mask packed pieces: the logits of piece B in a row
    ``[A | B]`` (positions restarting at B) must equal B's logits alone."""
    device = next(model.parameters()).device
    ids = torch.arange(1, 9, device=device)[None] % max(vocab_size, 2)
    pos = torch.tensor([[0, 1, 2, 3, 0, 1, 2, 3]], device=device)
    was = model.training
    model.eval()
    try:
        packed = logits_of(model, ids, pos)[:, 4:].float()
        alone = logits_of(model, ids[:, 4:])
    finally:
        model.train(was)
    if not torch.allclose(packed, alone.float(), atol=atol, rtol=1e-3):
        diff = float((packed - alone.float()).abs().max())
        raise UserError(
            f"{type(model).__name__} lets packed tail rows attend across pieces (logits differ by "
            f"{diff:.3g} from the piece alone): it ignores position_ids for document masking; "
            "prepare the dataset with --tails drop, or use a model whose mask follows position_ids"
        )
