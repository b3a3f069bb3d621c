"""``DDDataLoader`` through OLMo-core's interfaces: exact labels, doc_lens, elastic resume."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip("olmo_core")

from olmo_core.data.utils import get_cumulative_document_lengths, get_labels

from ddecomp import Blend, TokensConfig, VSLLoader, World, open_dataset, prepare_tokens
from ddecomp.integrations.olmo_core import DDDataLoader
from ddecomp.loading.protocols import IGNORE_INDEX
from tests._fixtures import EOS, identity_tokens, random_lengths

TPS = 512


def _prepare(tmp: Path, tails: str) -> Path:
    out = tmp / f"ds-{tails}"
    toks = identity_tokens(random_lengths(300, seed=7, hi=400))
    extra: dict[str, Any] = {"tail_len": 8} if tails == "pack" else {}
    prepare_tokens(TokensConfig(tokens=toks, out=out, eos_id=EOS, min_len=16, max_len=64,
                                tails=tails, **extra))  # fmt: skip
    return out


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _prepare(tmp_path_factory.mktemp("plain"), "drop")


@pytest.fixture(scope="module")
def packed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _prepare(tmp_path_factory.mktemp("packed"), "pack")


def _epoch(loader: DDDataLoader, epoch: int = 1) -> list[dict[str, Any]]:
    """One epoch as OLMo-core's Trainer runs it: reshuffle, iterate, reset."""
    loader.reshuffle(epoch)
    out = list(loader)
    loader.reset()
    return out


def test_every_target_of_every_row_once_and_olmo_core_own_labels_lose_one(plain: Path) -> None:
    ds = open_dataset(plain)
    loader = DDDataLoader(ds, global_batch_size=TPS, seed=1)
    batches = _epoch(loader)
    assert len(batches) == len(loader) == loader.total_batches > 5
    ours, theirs, lost = [], 0, []
    for b in batches:
        x, y = b["input_ids"], b["labels"]
        assert x.numel() == TPS
        # the identity corpus: a target is the token after its input (or the document's EOS)
        assert bool(((y == x + 1) | (y == EOS)).all())
        ours.append(y[y != EOS])
        # control: OLMo-core's own derivation shifts input_ids, losing each row's last target
        own = get_labels({"input_ids": x})
        assert bool((own[:, -1] == IGNORE_INDEX).all())
        assert torch.equal(own[:, :-1], y[:, :-1])
        theirs += int((own != IGNORE_INDEX).sum())
        lost.append(y[:, -1])
    trained = torch.cat([t.reshape(-1) for t in ours])
    assert trained.numel() > 1000  # vacuity guard
    assert torch.unique(trained).numel() == trained.numel()  # no target twice
    # every target of every planned row: all L of each row, the piece boundary's included
    plan = loader.vsl.plan
    want = sum(plan.batches(L) * plan.rows_per_batch(L) * L for L in plan.lengths)
    assert sum(b["labels"].numel() for b in batches) == want == len(batches) * TPS
    assert theirs == want - sum(b["labels"].shape[0] for b in batches)  # one lost per row
    assert torch.cat(lost).numel() > 0


def test_batches_equal_ddecomps_own_loader_and_labels_are_what_the_module_trains(
    plain: Path,
) -> None:
    ds = open_dataset(plain)
    ours = _epoch(DDDataLoader(ds, global_batch_size=TPS, seed=2, curriculum="grow-linear"))
    ref = list(VSLLoader(ds, tokens_per_step=TPS, seed=2, curriculum="grow-linear",
                         world=World()))  # fmt: skip
    assert len(ours) == len(ref) > 5
    for a, b in zip(ours, ref, strict=True):
        assert set(a) == {"input_ids", "labels"}  # only what OLMo-core's train module consumes
        assert torch.equal(a["input_ids"], b["input_ids"])
        assert torch.equal(a["labels"], b["labels"])


def test_doc_lens_of_tail_rows_are_their_pieces(packed: Path) -> None:
    ds = open_dataset(packed)
    loader = DDDataLoader(ds, global_batch_size=256, seed=3)
    ref = VSLLoader(ds, tokens_per_step=256, seed=3, world=World())
    masked = 0
    for got, want in zip(_epoch(loader), ref, strict=True):
        assert torch.equal(got["labels"], want["labels"])
        if "cu_seqlens" not in want:
            assert "doc_lens" not in got
            continue
        masked += 1
        x, doc_lens = got["input_ids"], got["doc_lens"]
        rows, L = x.shape
        assert doc_lens.dtype == torch.int32
        assert doc_lens.shape[0] == rows
        assert doc_lens.sum(dim=1).tolist() == [L] * rows  # each row is covered by its pieces
        assert got["max_doc_lens"] == doc_lens.max(dim=1).values.tolist()
        # what OLMo-core's model builds from doc_lens is ddecomp's document mask
        assert torch.equal(get_cumulative_document_lengths(doc_lens), want["cu_seqlens"])
        for r in range(rows):  # a segment is one piece: consecutive positions of one document
            bounds = np.cumsum([0, *[int(v) for v in doc_lens[r] if v]])
            y = got["labels"][r]
            for a, b in itertools.pairwise(bounds):
                seg, lab = x[r, a:b], y[a:b]
                keep = lab != IGNORE_INDEX
                assert bool(((lab[keep] == seg[keep] + 1) | (lab[keep] == EOS)).all())
                assert bool((seg[keep][1:] == seg[keep][:-1] + 1).all())
    assert masked > 0  # vacuity guard: tail steps were served


def test_document_mask_false_leaves_doc_lens_out(packed: Path) -> None:
    ds = open_dataset(packed)
    batches = _epoch(DDDataLoader(ds, global_batch_size=256, seed=3, document_mask=False))
    assert all(set(b) == {"input_ids", "labels"} for b in batches)
    assert any(bool((b["labels"] == IGNORE_INDEX).any()) for b in batches)  # tail padding


def test_state_at_world_1_resumes_at_world_2_as_the_slices(plain: Path) -> None:
    ds = open_dataset(plain)
    one = DDDataLoader(ds, global_batch_size=TPS, seed=4)
    one.reshuffle(1)
    it = iter(one)
    k = 4
    for _ in range(k):
        next(it)
    state = json.loads(json.dumps(one.state_dict()))  # what OLMo-core's checkpoint holds
    assert state["batches_processed"] == k
    rest = list(it)
    ranks = []
    for r in range(2):
        ld = DDDataLoader(ds, global_batch_size=TPS, seed=4, dp_rank=r, dp_world_size=2)
        ld.load_state_dict(state)
        assert (ld.batches_processed, ld.tokens_processed) == (k, k * TPS)
        ld.reshuffle(1)  # the Trainer reshuffles the restored epoch: the position is kept
        ranks.append(list(ld))
    assert len(rest) == len(ranks[0]) == len(ranks[1]) > 3
    for s, (w, r0, r1) in enumerate(zip(rest, *ranks, strict=True), start=k):
        for key in ("input_ids", "labels"):
            assert torch.equal(torch.cat([r0[key], r1[key]]), w[key]), f"step {s} {key}"
        assert r0["input_ids"].numel() == TPS // 2


def test_epochs_follow_olmo_core_and_an_ended_epoch_does_not_roll_over(plain: Path) -> None:
    ds = open_dataset(plain)
    loader = DDDataLoader(ds, global_batch_size=TPS, seed=5)
    e1 = _epoch(loader, 1)
    state = loader.state_dict()  # after reset(): epoch 1 is done
    e2 = _epoch(loader, 2)
    assert loader.batches_in_epoch(2) == len(e2) > 0
    assert not all(torch.equal(a["input_ids"], b["input_ids"]) for a, b in zip(e1, e2, strict=True))
    ld = DDDataLoader(ds, global_batch_size=TPS, seed=5)
    ld.load_state_dict(state)
    ld.reshuffle(1)
    assert list(ld) == []  # the restored epoch is over: nothing more in it
    assert [b["input_ids"].tolist() for b in _epoch(ld, 2)] == [b["input_ids"].tolist() for b in e2]


def test_mock_batch_is_a_real_longest_batch_and_keeps_the_position(plain: Path) -> None:
    ds = open_dataset(plain)
    loader = DDDataLoader(ds, global_batch_size=TPS, seed=6)
    mock = loader.get_mock_batch()
    assert mock["input_ids"].shape == (TPS // ds.max_len, ds.max_len)
    assert loader.state_dict()["ddecomp"]["step"] == 0
    assert len(_epoch(loader)) == loader.total_batches


def test_a_blend_is_served_as_ddecomp_serves_it(plain: Path, packed: Path) -> None:
    blend = Blend([(plain, 1.0), (packed, 0.5)], seed=1)
    ours = _epoch(DDDataLoader(blend, global_batch_size=256, seed=8, document_mask=True))
    ref = list(VSLLoader(blend, tokens_per_step=256, seed=8, world=World()))
    assert len(ours) == len(ref) > 5
    masked = 0
    for a, b in zip(ours, ref, strict=True):
        assert torch.equal(a["input_ids"], b["input_ids"])
        assert torch.equal(a["labels"], b["labels"])
        if "cu_seqlens" in b:
            masked += 1
            assert torch.equal(get_cumulative_document_lengths(a["doc_lens"]), b["cu_seqlens"])
    assert masked > 0  # the packed source's tail rows came through the blend


def test_workers_serve_the_same_batches(plain: Path) -> None:
    ds = open_dataset(plain)
    ref = _epoch(DDDataLoader(ds, global_batch_size=TPS, seed=9))
    got = _epoch(DDDataLoader(ds, global_batch_size=TPS, seed=9, num_workers=2))
    assert len(got) == len(ref) > 5
    for a, b in zip(got, ref, strict=True):
        assert torch.equal(a["input_ids"], b["input_ids"])
        assert torch.equal(a["labels"], b["labels"])
