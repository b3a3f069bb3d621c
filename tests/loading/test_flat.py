"""The flat layout serves exactly the rows layout's tokens as one ``[1, T]`` stream per step."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from ddecomp import Blend, TokensConfig, VSLLoader, World, open_dataset, prepare_tokens
from ddecomp.errors import UserError
from ddecomp.loading.base import StepLoader
from ddecomp.loading.concat import ConcatChunkLoader
from ddecomp.loading.pack import PackedLoader
from ddecomp.loading.protocols import Batch
from ddecomp.loading.rebucket import rebucket
from ddecomp.training.microbatch import split_batch
from tests._fixtures import EOS, assert_resume_equivalent, identity_tokens, random_lengths


def _prep(root: Path, seed: int, tails: str = "drop") -> Path:
    toks = identity_tokens(random_lengths(300, seed=seed, hi=300))
    cfg = TokensConfig(toks, root, eos_id=EOS, min_len=16, max_len=64, val_fraction=0.1)
    if tails == "pack":
        cfg = TokensConfig(toks, root, eos_id=EOS, min_len=16, max_len=64, tails="pack",
                           tail_len=8)  # fmt: skip
    prepare_tokens(cfg)
    return root


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("flat")
    return {
        "plain": _prep(base / "plain", 1),
        "plain2": _prep(base / "plain2", 2),
        "pack": _prep(base / "pack", 3, tails="pack"),
    }


def check_flat(flat: Batch, rows: Batch, where: str) -> None:
    """``flat`` is ``rows`` flattened, and its varlen fields say where each sequence starts."""
    x = rows["input_ids"]
    B, L = x.shape
    T = B * L
    assert flat["input_ids"].shape == (1, T), where
    assert torch.equal(flat["input_ids"], x.reshape(1, T)), where
    assert torch.equal(flat["labels"], rows["labels"].reshape(1, T)), where
    for k in ("seq_len", "step", "epoch"):
        assert flat[k] == rows[k], (where, k)
    assert set(rows) <= set(flat), where
    cu = flat["cu_seqlens"]
    assert cu.dtype == torch.int32, where
    c = cu.numpy().astype(np.int64)
    assert c[0] == 0, where
    assert c[-1] == T, where
    assert bool(np.all(np.diff(c) > 0)), where
    assert set(range(0, T + 1, L)) <= set(c.tolist()), f"{where}: a row end is no boundary"
    if "cu_seqlens" in rows:  # the pieces the rows batch marks are marked, and only those
        assert torch.equal(cu, rows["cu_seqlens"].to(torch.int32)), where
    else:
        assert c.tolist() == list(range(0, T + 1, L)), where
    assert isinstance(flat["max_seqlen"], int), where
    assert flat["max_seqlen"] == rows.get("max_seqlen", L), where
    assert flat["max_seqlen"] >= int(np.diff(c).max()), where
    pos = flat["position_ids"]
    assert pos.shape == (1, T), where
    assert pos.dtype == torch.int64, where
    seg_start = np.repeat(c[:-1], np.diff(c))
    assert np.array_equal(pos.numpy()[0], np.arange(T) - seg_start), f"{where}: positions"


def compare(make: Callable[..., StepLoader], ranks: int = 1, epochs: int = 1) -> int:
    """Flat and rows loaders step by step on every rank; returns the batches compared."""
    n, shapes = 0, set()
    for rank in range(ranks):
        world = World(rank=rank, world_size=ranks)
        rows_ld, flat_ld = make(world=world), make(world=world, layout="flat")
        for e in range(epochs):
            rows_ld.set_epoch(e)
            flat_ld.set_epoch(e)
            for r, f in zip(rows_ld, flat_ld, strict=True):
                check_flat(f, r, f"rank {rank} epoch {e} step {r['step']}")
                shapes.add(tuple(f["input_ids"].shape))
                n += 1
    assert len(shapes) == 1  # one shape for the whole run
    return n


@pytest.mark.parametrize("world_size", [1, 2, 4])
def test_vsl_flat_is_the_rows_tokens_on_every_rank(dirs: dict[str, Path], world_size: int) -> None:
    ds = open_dataset(dirs["plain"])

    def make(**kw: Any) -> VSLLoader:
        return VSLLoader(ds, tokens_per_step=256, seed=5, **kw)

    assert len(make().step_lengths) >= 3  # several shapes in rows: the case that matters
    assert compare(make, world_size, epochs=2) >= 10


def test_tail_rows_keep_their_pieces(dirs: dict[str, Path]) -> None:
    ds = open_dataset(dirs["pack"])
    masked = []

    def make(**kw: Any) -> VSLLoader:
        return VSLLoader(ds, tokens_per_step=256, seed=1, **kw)

    for b in make():
        if "cu_seqlens" in b:
            masked.append(b["step"])
    assert masked  # vacuity guard: tail rows were served
    assert compare(make, 2) > 0


def test_blend_and_rebucketed_view(dirs: dict[str, Path]) -> None:
    blend = Blend([(dirs["plain"], 1.0), (dirs["plain2"], 0.5), (dirs["pack"], 1.0)], seed=2)
    assert compare(lambda **kw: VSLLoader(blend, tokens_per_step=256, **kw), 2) > 0
    view = rebucket(open_dataset(dirs["plain"]), 32)
    assert max(view.bucket_lengths) == 32
    assert compare(lambda **kw: VSLLoader(view, tokens_per_step=128, **kw), 2) > 0


@pytest.mark.parametrize("kind", ["concat", "concat-dm", "pack"])
def test_baselines(dirs: dict[str, Path], kind: str) -> None:
    ds = open_dataset(dirs["plain"])

    def make(**kw: Any) -> StepLoader:
        if kind == "pack":
            return PackedLoader(ds, seq_len=64, tokens_per_step=256, **kw)
        return ConcatChunkLoader(
            ds, seq_len=64, tokens_per_step=256, doc_mask=kind == "concat-dm", **kw
        )

    assert compare(make, 2) > 0


def test_resume_at_every_step_and_across_layouts(dirs: dict[str, Path]) -> None:
    ds = open_dataset(dirs["pack"])

    def make(layout: str = "flat") -> VSLLoader:
        return VSLLoader(ds, tokens_per_step=256, seed=4, world=World(1, 2), layout=layout)

    assert assert_resume_equivalent(make) >= 3
    assert assert_resume_equivalent(
        lambda: PackedLoader(ds, seq_len=64, tokens_per_step=256, layout="flat")
    )
    rows = make("rows")
    it = iter(rows)
    next(it), next(it)
    flat = make()
    flat.load_state_dict(rows.state_dict())  # a rows state resumes a flat loader
    check_flat(next(iter(flat)), next(it), "rows state, flat loader")
    again = make("rows")
    again.load_state_dict(flat.state_dict())  # and back
    assert again.step == flat.step == 3


def test_workers_serve_the_same_flat_batches(dirs: dict[str, Path]) -> None:
    ds = open_dataset(dirs["pack"])
    ref = list(VSLLoader(ds, tokens_per_step=256, layout="flat"))
    got = list(VSLLoader(ds, tokens_per_step=256, layout="flat", world=World(0, 1, 0, 2)))
    assert len(got) == len(ref) > 0
    for g, r in zip(got, ref, strict=True):
        for k in ("input_ids", "labels", "position_ids", "cu_seqlens"):
            assert torch.equal(g[k], r[k]), k
        assert g["max_seqlen"] == r["max_seqlen"]


@pytest.mark.parametrize("bad", ["Flat", "", None, 1, "thd"])
def test_invalid_layout_is_one_line(dirs: dict[str, Path], bad: object) -> None:
    ds = open_dataset(dirs["plain"])
    with pytest.raises(UserError, match="layout"):
        VSLLoader(ds, tokens_per_step=256, layout=bad)
    with pytest.raises(UserError, match="layout"):
        PackedLoader(ds, seq_len=64, tokens_per_step=256, layout=bad)  # type: ignore[arg-type]


def test_split_batch_cuts_flat_batches_at_sequence_boundaries(dirs: dict[str, Path]) -> None:
    ds = open_dataset(dirs["pack"])
    rows = list(VSLLoader(ds, tokens_per_step=256))
    flat = list(VSLLoader(ds, tokens_per_step=256, layout="flat"))
    cut = 0
    for r, f in zip(rows, flat, strict=True):
        rs, fs = split_batch(r, 64), split_batch(f, 64)
        assert len(rs) == len(fs)
        cut += len(fs) > 1
        for a, b in zip(rs, fs, strict=True):
            check_flat(b, a, f"step {r['step']}")
    assert cut > 0  # vacuity guard: some steps were split


def test_summary_records_the_layout(dirs: dict[str, Path]) -> None:
    ds = open_dataset(dirs["plain"])
    makers: list[Callable[..., StepLoader]] = [
        lambda **kw: VSLLoader(ds, tokens_per_step=256, **kw),
        lambda **kw: ConcatChunkLoader(ds, seq_len=64, tokens_per_step=256, **kw),
        lambda **kw: ConcatChunkLoader(ds, seq_len=64, tokens_per_step=256, doc_mask=True, **kw),
        lambda **kw: PackedLoader(ds, seq_len=64, tokens_per_step=256, **kw),
    ]
    for make in makers:
        assert make().summary()["layout"] == "rows"
        assert make(layout="flat").summary()["layout"] == "flat"
