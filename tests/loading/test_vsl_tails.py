"""The VSL loader serves ``--tails pack`` tail rows with their labels and document mask."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ddecomp import Blend, TokensConfig, VSLLoader, World, open_dataset, prepare_tokens
from ddecomp.loading.protocols import IGNORE_INDEX
from tests._fixtures import (
    EOS,
    assert_batches_equal,
    assert_resume_equivalent,
    identity_tokens,
    random_lengths,
)


def _pack(tmp: Path, seed: int) -> Path:
    out = tmp / f"ds{seed}"
    toks = identity_tokens(random_lengths(400, seed=seed, hi=300))
    prepare_tokens(TokensConfig(tokens=toks, out=out, eos_id=EOS, min_len=16, max_len=64,
                                tails="pack", tail_len=8))  # fmt: skip
    return out


def _epoch_targets(loader: VSLLoader) -> tuple[list[np.ndarray], int]:
    got, masked = [], 0
    for b in loader:
        x, y = b["input_ids"].numpy(), b["labels"].numpy()
        keep = y != IGNORE_INDEX
        assert bool(np.all((y[keep] == x[keep] + 1) | (y[keep] == EOS)))
        if "cu_seqlens" in b:
            masked += 1
            cu = b["cu_seqlens"].numpy()
            B, L = x.shape
            assert cu[0] == 0
            assert cu[-1] == B * L
            assert bool(np.all(np.diff(cu) > 0))
            pos = b["position_ids"].numpy().ravel()
            starts = np.zeros(B * L, dtype=bool)
            starts[cu[:-1]] = True
            assert bool(np.all(starts == (pos == 0)))  # a position restarts per piece
            # inside a segment, inputs are consecutive positions of one document
            inside = ~starts[1:] & (x.ravel()[1:] != EOS) & keep.ravel()[1:]
            assert bool(np.all(x.ravel()[1:][inside] == x.ravel()[:-1][inside] + 1))
        got.append(x[keep])
    return got, masked


def test_vsl_serves_tail_rows_masked_and_once_across_ranks(tmp_path: Path) -> None:
    ds = open_dataset(_pack(tmp_path, 1))
    assert ds.bucket_lengths[0] == 8  # the tail bucket is the shortest
    served = []
    masked = 0
    for rank in range(2):
        ld = VSLLoader(ds, tokens_per_step=256, world=World(rank=rank, world_size=2), seed=3)
        got, m = _epoch_targets(ld)
        served += got
        masked += m
    assert masked > 0  # vacuity guard: tail steps were served
    allx = np.concatenate(served)
    assert np.unique(allx).size == allx.size  # no target twice, over both ranks


def test_blend_of_pack_and_pack_serves_masks(tmp_path: Path) -> None:
    b = Blend([(_pack(tmp_path, 1), 1.0), (_pack(tmp_path, 2), 0.5)], seed=1)
    ld = VSLLoader(b, tokens_per_step=256, world=World(rank=0, world_size=1))
    assert ld.masked_lengths == (8,)  # the sources' tail bucket
    got, masked = _epoch_targets(ld)
    assert masked > 0
    assert isinstance(got[0], np.ndarray)
    assert torch.is_tensor(torch.from_numpy(got[0]))


def test_resume_with_tail_rows_serves_the_same_batches(tmp_path: Path) -> None:
    ds = open_dataset(_pack(tmp_path, 3))

    def make() -> VSLLoader:
        return VSLLoader(ds, tokens_per_step=512, world=World(rank=1, world_size=2), seed=5)

    ld = make()
    assert ld.masked_lengths == (8,)
    assert any("cu_seqlens" in b for b in make())  # vacuity guard: masked steps are resumed
    assert_resume_equivalent(make)


def test_workers_serve_tail_rows_unchanged(tmp_path: Path) -> None:
    ds = open_dataset(_pack(tmp_path, 4))
    plain = list(VSLLoader(ds, tokens_per_step=256, world=World(0, 1), seed=2))
    two = list(VSLLoader(ds, tokens_per_step=256, world=World(0, 1, num_workers=2), seed=2))
    assert any("cu_seqlens" in b for b in plain)
    for a, b in zip(plain, two, strict=True):
        assert_batches_equal(b, a)


def test_tail_rows_survive_serving_at_a_shorter_maximum(tmp_path: Path) -> None:
    """Tail rows of length ``min`` and pieces of longer rows share bucket ``min`` of a rebucketed
    view: the epoch still serves every target of the full dataset exactly once, masked where
    packed."""
    from ddecomp.loading.rebucket import rebucket

    out = tmp_path / "ds"
    toks = identity_tokens(random_lengths(400, seed=4, hi=300))
    prepare_tokens(TokensConfig(tokens=toks, out=out, eos_id=EOS, min_len=16, max_len=64,
                                tails="pack"))  # fmt: skip
    ds = open_dataset(out)
    rows = ds.for_epoch(0)
    held = []  # every target the dataset holds (inputs whose label is trained), by bucket
    for L, n in ds.bucket_rows.items():
        buf = np.empty((n, L + 1), dtype=np.int64)
        packed = rows.fill(L, np.arange(n), buf)
        labels = buf[:, 1:] if packed is None else packed.labels
        held.append(buf[:, :-1][labels != IGNORE_INDEX])
    every = np.concatenate(held)
    view = rebucket(ds, 16)
    assert list(view.bucket_lengths) == [16]
    loader = VSLLoader(view, tokens_per_step=256, world=World(), seed=5)
    # the view says which lengths carry masks, so a compiled model is warmed up for them
    assert tuple(ds.packed_lengths) == tuple(view.packed_lengths) == loader.masked_lengths == (16,)
    got, masked = _epoch_targets(loader)
    assert masked > 0  # vacuity guard: packed tail rows were served through the view
    served = np.concatenate(got)
    assert np.unique(served).size == served.size  # no target twice
    assert np.isin(served, every).all()  # only the dataset's own targets
    assert every.size - served.size < 256  # all but the plan's left-out rows (under one step)
