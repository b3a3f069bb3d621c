"""Micro-batches: a step split into row slices gives the unsplit step's gradients and loss."""

from __future__ import annotations

import pytest
import torch

from ddecomp.errors import UserError
from ddecomp.loading.protocols import IGNORE_INDEX, Batch
from ddecomp.training.attention import make_doc_mask
from ddecomp.training.microbatch import row_slices, slice_cu_seqlens, split_batch
from ddecomp.training.model import GPT, model_config
from ddecomp.training.step import MicroBatch, train_step

VOCAB, B, L = 97, 8, 16


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    buf = torch.randint(0, VOCAB, (B, L + 1), generator=g)
    y = buf[:, 1:].clone()
    # rows hold different numbers of targets: a per-micro-batch mean would weigh them wrongly
    for r in range(B):
        y[r, : 2 * r] = IGNORE_INDEX
    return buf[:, :-1], y


def _step(micro: list[MicroBatch] | MicroBatch, targets: int, per_micro_mean: bool = False):
    """Parameter change of one SGD(lr=1) step: minus the (unclipped) gradient."""
    torch.manual_seed(1)
    model = GPT(model_config("tiny", VOCAB))
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    if per_micro_mean:  # what hand-written accumulation often does: each slice's own mean
        assert isinstance(micro, list)
        for x, y, pos, mask in micro:
            logits = model(x, pos, mask)
            loss = torch.nn.functional.cross_entropy(
                logits.flatten(0, 1), y.flatten(), ignore_index=IGNORE_INDEX
            )
            (loss / len(micro)).backward()
        opt.step()
        loss_sum = torch.tensor(float("nan"))
    else:
        loss_sum, _ = train_step(
            model, model.parameters(), opt, None, micro, torch.tensor(float(targets)), 1, 1e9
        )
    delta = [(p.detach() - b) for p, b in zip(model.parameters(), before, strict=True)]
    return loss_sum, delta


@pytest.mark.parametrize("rows_per_micro", [1, 3, 4])
def test_micro_batched_step_equals_the_unsplit_step(rows_per_micro: int) -> None:
    x, y = _batch()
    targets = int((y != IGNORE_INDEX).sum())
    whole_loss, whole = _step((x, y, None, None), targets)
    slices = row_slices(B, L, rows_per_micro * L)
    assert len(slices) == -(-B // rows_per_micro) > 1  # really split (3 rows: 3 + 3 + 2)
    micro: list[MicroBatch] = [(x[r], y[r], None, None) for r in slices]
    split_loss, split = _step(micro, targets)
    assert torch.allclose(split_loss, whole_loss, rtol=1e-6)
    assert any(float(d.abs().max()) > 1e-4 for d in whole)  # vacuity: the step moved weights
    for a, b in zip(split, whole, strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-7)
    # the check can fail: per-micro-batch means give other gradients on the same slices
    _, wrong = _step(micro, targets, per_micro_mean=True)
    assert not all(
        torch.allclose(a, b, rtol=1e-4, atol=1e-7) for a, b in zip(wrong, whole, strict=True)
    )


def test_split_batch_keeps_documents_and_rebases_cu_seqlens() -> None:
    x, y = _batch()
    # documents: row r holds segments of lengths 5 + 11 (row 0..3) or one of 16 (rows 4..7)
    cu = [0]
    for r in range(B):
        cu += [r * L + 5, (r + 1) * L] if r < 4 else [(r + 1) * L]
    batch: Batch = {
        "input_ids": x, "labels": y, "seq_len": L, "step": 3, "epoch": 1,
        "cu_seqlens": torch.tensor(cu, dtype=torch.int32), "max_seqlen": 16,
        "position_ids": torch.arange(L).repeat(B, 1),
    }  # fmt: skip
    parts = split_batch(batch, 3 * L)
    assert [p["input_ids"].shape[0] for p in parts] == [3, 3, 2]
    assert torch.equal(torch.cat([p["input_ids"] for p in parts]), x)
    assert torch.equal(torch.cat([p["labels"] for p in parts]), y)
    assert parts[1]["cu_seqlens"].tolist() == [0, 5, 16, 32, 48]  # rows 3 (5 + 11), 4, 5
    full = make_doc_mask(batch["cu_seqlens"], B, L, torch.device("cpu"), kind="dense").dense
    got = [
        make_doc_mask(p["cu_seqlens"], p["input_ids"].shape[0], L, torch.device("cpu"), "dense")
        for p in parts
    ]
    assert full is not None
    assert torch.equal(torch.cat([g.dense for g in got if g.dense is not None]), full)
    assert all(p["step"] == 3 and p["epoch"] == 1 for p in parts)


def test_row_slices_refuse_a_micro_batch_below_one_row() -> None:
    assert row_slices(5, 16, None) == [slice(0, 5)]
    assert row_slices(5, 16, 10_000) == [slice(0, 5)]
    with pytest.raises(UserError, match="at least 16"):
        row_slices(5, 16, 8)
    assert slice_cu_seqlens(torch.tensor([0, 16, 32]), slice(1, 2), 16).tolist() == [0, 16]
