"""Row starts above EAGER_ROWS stay in their shards' mapped files (ddecomp.data.rowstarts): the
rows, batches, tails, blends and rebucketed views served are those of the in-memory array, and
opening holds no array per row."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

from ddecomp import Blend, TokensConfig, VSLLoader, open_dataset, prepare_tokens
from ddecomp.data.rowstarts import ShardedStarts
from ddecomp.loading.rebucket import rebucket
from tests._fixtures import EOS, assert_batches_equal, identity_tokens, random_lengths


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A plain dataset and one with packed tails, several shards each."""
    tmp = tmp_path_factory.mktemp("rowstarts")
    toks = identity_tokens(random_lengths(600, seed=3, hi=2500))
    out = []
    for name, tails in (("plain", "drop"), ("tails", "pack")):
        root = tmp / name
        prepare_tokens(
            TokensConfig(toks, root, eos_id=EOS, dtype="uint32", min_len=16, max_len=256,
                         shard_size=40_000, val_fraction=0.1, tails=tails)
        )  # fmt: skip
        out.append(root)
    return out[0], out[1]


def _lazy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("ddecomp.data.rowstarts.EAGER_ROWS", 0)


@pytest.mark.parametrize("which", [0, 1])
def test_mapped_starts_serve_the_in_memory_rows(
    data: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, which: int
) -> None:
    root = data[which]
    eager = open_dataset(root)
    _lazy(monkeypatch)
    lazy = open_dataset(root)
    assert len(eager.manifest["shards"]) > 2  # vacuity: rows spread over several shards
    compared = 0
    for L in eager.bucket_lengths:
        starts = lazy.row_starts(L)
        assert isinstance(starts, ShardedStarts)
        assert not isinstance(eager.row_starts(L), ShardedStarts)
        assert np.array_equal(np.asarray(starts), eager.row_starts(L))
        assert list(starts) == eager.row_starts(L).tolist()
        n = eager.num_rows(L)
        idx = np.random.default_rng(L).permutation(n)
        a, b = np.empty((n, L + 1), np.int64), np.empty((n, L + 1), np.int64)
        pa, pb = eager.fill(L, idx, a), lazy.fill(L, idx, b)
        assert np.array_equal(a, b)
        assert (pa is None) == (pb is None)
        if pa is not None and pb is not None:
            assert np.array_equal(pa.labels, pb.labels)
        compared += n
    assert compared > 1000
    kw = dict(tokens_per_step=1024, seed=5, world=None)
    got, want = VSLLoader(lazy, **kw), VSLLoader(eager, **kw)
    steps = 0
    for x, y in zip(got, want, strict=True):
        assert_batches_equal(x, y, f"step {steps}")
        steps += 1
    assert steps > 10


def test_blends_and_rebucketed_views_over_mapped_starts(
    data: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    plain, tails = data
    want = [Blend([(plain, 0.5), (tails, 1.0)], seed=1), rebucket(open_dataset(plain), 64)]
    _lazy(monkeypatch)
    got = [Blend([(plain, 0.5), (tails, 1.0)], seed=1), rebucket(open_dataset(plain), 64)]
    for g, w in zip(got, want, strict=True):
        kw = dict(tokens_per_step=512, seed=2, world=None)
        n = 0
        for x, y in zip(VSLLoader(g, **kw), VSLLoader(w, **kw), strict=True):
            assert_batches_equal(x, y)
            n += 1
        assert n > 10


def test_opening_maps_instead_of_reading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Opening a dataset of ~500k rows: the in-memory kind allocates 8 bytes per row (several MB
    for the concatenated starts), the mapped kind a small fraction of that."""
    toks = np.full(10_000_000, 7, dtype=np.uint16)
    toks[16::17] = 0  # 588k documents of 17 tokens (EOS 0): one row of 16 targets each
    root = tmp_path / "many"
    prepare_tokens(TokensConfig(toks, root, eos_id=0, min_len=16, max_len=32))
    rows = open_dataset(root).num_rows(16)
    assert rows > 500_000

    def peak() -> int:
        tracemalloc.start()
        ds = open_dataset(root)
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert ds.num_rows(16) == rows
        return top

    eager = peak()
    _lazy(monkeypatch)
    lazy = peak()
    assert eager >= 8 * rows  # the concatenated starts
    assert lazy < eager / 4
    ds = open_dataset(root)
    batch = torch.from_numpy(ds.rows(16, np.arange(0, rows, 997)).astype(np.int64))
    assert int((batch == 7).sum()) == batch.numel() - int((batch == 0).sum()) > 0
