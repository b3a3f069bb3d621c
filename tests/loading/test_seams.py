"""The seams between data, loaders and trainer: one World, typed data, keyword-only options,
and the baselines executing the same Plan as DD."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ddecomp.data.blend import Blend
from ddecomp.data.dataset import Dataset, open_dataset
from ddecomp.errors import UserError
from ddecomp.loading.concat import ConcatChunkLoader
from ddecomp.loading.pack import PackedLoader
from ddecomp.loading.protocols import BucketData, DocumentData, TrainData
from ddecomp.loading.vsl import VSLLoader
from ddecomp.loading.world import World
from ddecomp.preparing.pipeline import TokensConfig, prepare_tokens
from tests._fixtures import identity_tokens, random_lengths, run_python

EOS = 1 << 31
L = 32


@pytest.fixture(scope="module")
def ds(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    root: Path = tmp_path_factory.mktemp("seams")
    toks = identity_tokens(random_lengths(150, 21, lo=3, hi=150), EOS)
    prepare_tokens(TokensConfig(toks, root, eos_id=EOS, min_len=8, max_len=64, overwrite=True))
    return open_dataset(root)


# ---- World ---------------------------------------------------------------------------------------
def test_world_detect_reads_torchrun_variables_only_through_detect() -> None:
    env = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}
    assert World.detect(num_workers=2, env=env) == World(3, 4, local_rank=1, num_workers=2)
    assert World.detect(env={}) == World()
    w = World(rank=3, world_size=4)
    assert (w.is_main, w.distributed, World().is_main, World().distributed) == (
        False, True, True, False,
    )  # fmt: skip
    assert w.with_workers(3) == World(3, 4, num_workers=3)
    with pytest.raises(UserError, match="RANK / WORLD_SIZE / LOCAL_RANK must be integers"):
        World.detect(env={"RANK": "x"})


@pytest.mark.parametrize(
    ("kw", "msg"),
    [
        ({"rank": 2, "world_size": 2}, r"rank 2 is not in 0\.\.1"),
        ({"world_size": 0}, "world_size 0 must be an integer >= 1"),
        ({"num_workers": -1}, "num_workers -1 must be"),
        ({"local_rank": -1}, "local_rank -1 must be"),
        ({"rank": True}, "rank True must be an integer"),
        ({"world_size": 1.5}, "world_size 1.5 must be an integer"),
    ],
)
def test_world_refuses_impossible_places(kw: dict[str, object], msg: str) -> None:
    with pytest.raises(UserError, match=msg):
        World(**kw)  # type: ignore[arg-type]


def test_loaders_take_the_world_and_default_to_detect(
    ds: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert VSLLoader(ds, tokens_per_step=256).world == World(1, 2)  # torchrun's, before init
    with pytest.raises(UserError, match=r"must be a ddecomp\.World, a data-parallel .* not tuple"):
        VSLLoader(ds, tokens_per_step=256, world=(0, 1))  # type: ignore[arg-type]


def test_loader_options_are_keyword_only(ds: Dataset) -> None:
    with pytest.raises(TypeError, match="positional"):
        VSLLoader(ds, 256)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="positional"):
        ConcatChunkLoader(ds, L, 256)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="positional"):
        PackedLoader(ds, L, 256)  # type: ignore[call-arg]


# ---- typed data ----------------------------------------------------------------------------------
def test_dataset_and_blend_are_the_loaders_data(ds: Dataset) -> None:
    blend = Blend([(ds, 1.0), (ds, 0.5)], seed=1)
    views: list[TrainData] = [ds, blend]  # mypy checks the structural match here
    for v in views:
        assert isinstance(v, BucketData)
        assert isinstance(v, DocumentData)
        assert isinstance(v, TrainData)
    assert not isinstance(np.zeros(3), BucketData)


def test_a_blend_has_no_epoch_less_rows(ds: Dataset) -> None:
    """Rows behind a fractional factor rotate with the epoch: the epoch is always explicit."""
    blend = Blend([(ds, 0.5)], seed=1)
    assert not hasattr(blend, "rows")
    L8 = 8
    idx = np.arange(blend.num_rows(L8))
    e0, e1 = blend.for_epoch(0).rows(L8, idx), blend.for_epoch(1).rows(L8, idx)
    assert e0.shape == e1.shape == (idx.size, L8 + 1)
    assert idx.size > 10
    assert not np.array_equal(e0, e1)


def test_the_ignore_label_has_one_home_that_does_not_import_torch() -> None:
    code = (
        "import sys; from ddecomp.loading.protocols import IGNORE_INDEX; "
        "assert IGNORE_INDEX == -100; assert 'torch' not in sys.modules"
    )
    r = run_python("-c", code)
    assert r.returncode == 0, r.stderr
    import ddecomp.loading.concat as concat
    import ddecomp.training.model as model
    from ddecomp.loading import protocols

    assert model.IGNORE_INDEX is protocols.IGNORE_INDEX
    assert not hasattr(concat, "IGNORE")


# ---- the baselines execute a Plan ----------------------------------------------------------------
@pytest.mark.parametrize("world_size", [1, 2, 4])
def test_concat_rows_are_the_plans_rank_slices(ds: Dataset, world_size: int) -> None:
    stream = np.concatenate(list(ds.documents())).astype(np.int64)
    tps = L * 8
    served = []
    for r in range(world_size):
        ld = ConcatChunkLoader(
            ds, seq_len=L, tokens_per_step=tps, seed=4, world=World(r, world_size)
        )
        plan = ld.plan
        assert plan.lengths == (L,)
        assert plan.budget == {L: ld.num_rows}
        assert len(plan) == len(ld) > 3
        for b in ld:
            rows = plan.rank_rows(b["step"], r, world_size)
            want = np.stack([stream[i * L : i * L + L] for i in rows.tolist()])
            assert np.array_equal(b["input_ids"].numpy(), want)
            served += rows.tolist()
    assert len(served) == len(set(served)) == len(ld) * 8  # every planned row once over ranks


def test_pack_steps_are_the_plans_steps(ds: Dataset) -> None:
    ld = PackedLoader(ds, seq_len=L, tokens_per_step=L * 4, seed=4, world=World(1, 2))
    plan = ld.plan
    assert plan.lengths == (L,)
    assert plan.budget == {L: ld.num_rows}
    assert len(plan) == len(ld) == ld.num_rows // 4 > 3
    again = PackedLoader(ds, seq_len=L, tokens_per_step=L * 4, seed=4, world=World(1, 2))
    assert np.array_equal(again.plan.order(L), plan.order(L))
