"""Attacks on the flat layout and the torchtitan loader: each answer is one line, never a trace."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ddecomp import VSLLoader, open_dataset
from ddecomp.errors import UserError
from ddecomp.loading.flat import to_flat
from ddecomp.training.microbatch import split_batch
from tests._fixtures import run_python
from tests.training._corpus import make_dataset


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("flatfaults") / "ds", n_tokens=60_000)


def _one_line_exit_2(res: object, *words: str) -> None:
    rc, err = res.returncode, res.stderr  # type: ignore[attr-defined]
    assert rc == 2, err
    assert "Traceback" not in err, err
    for w in words:
        assert w in err, err


def test_cli_refuses_an_unknown_layout(data: Path, tmp_path: Path) -> None:
    res = run_python("-m", "ddecomp", "train", str(data), "--out", str(tmp_path / "r"),
                     "--layout", "thd", "--device", "cpu")  # fmt: skip
    _one_line_exit_2(res, "--layout", "thd")
    assert not (tmp_path / "r").exists()  # nothing written


def test_cli_refuses_a_dense_cpu_mask_too_large_before_reading_data(tmp_path: Path) -> None:
    """--compile on the CPU masks the flat stream densely: 65,536 tokens per rank would be a
    4 GiB mask per step; refused in one line before the data is even opened."""
    res = run_python("-m", "ddecomp", "train", str(tmp_path / "no-such-data"), "--out",
                     str(tmp_path / "r"), "--layout", "flat", "--compile", "--device", "cpu",
                     "--tokens-per-step", "65536", "--tokens", "131072")  # fmt: skip
    _one_line_exit_2(res, "--micro-batch-tokens 32768", "4.0 GiB")


def test_flat_batches_of_one_sequence_and_extra_keys(data: Path) -> None:
    """T == L (one sequence per rank): the flat batch is its rows batch plus the varlen fields;
    split_batch and a key a loader adds (e.g. a blend's source) pass through."""
    ds = open_dataset(data)
    ld = VSLLoader(ds, tokens_per_step=128, layout="flat")
    full = [b for b in ld if b["seq_len"] == 128]
    assert full  # vacuity guard
    b = full[0]
    assert b["input_ids"].shape == (1, 128)
    assert b["cu_seqlens"].tolist() == [0, 128]
    (mb,) = split_batch(b, 128)
    assert torch.equal(mb["input_ids"], b["input_ids"])
    rows = VSLLoader(ds, tokens_per_step=128).make_step(0, b["step"])
    extra = {**rows, "source": torch.zeros(1, dtype=torch.int64)}
    assert torch.equal(to_flat(extra)["source"], extra["source"])  # type: ignore[arg-type]


def test_micro_batches_below_a_sequence_are_refused(data: Path) -> None:
    ds = open_dataset(data)
    b = next(iter(VSLLoader(ds, tokens_per_step=1024, layout="flat")))
    with pytest.raises(UserError, match="rows are never cut"):
        split_batch(b, b["seq_len"] - 1)


def test_torchtitan_refuses_foreign_or_malformed_states(data: Path) -> None:
    pytest.importorskip("torchtitan")
    from ddecomp.integrations.torchtitan import DDDataLoader

    def build(**kw: object) -> DDDataLoader:
        args: dict[str, object] = {"dp_world_size": 1, "dp_rank": 0, "seq_len": 128, **kw}
        return DDDataLoader.Config(dataset_path=str(data)).build(**args)

    loader = build()
    deep = "[" * 100_000 + "]" * 100_000
    for raw in (b"\x80\x04K\x01.", "not json", deep, 7, '{"version": 1}'):
        with pytest.raises(UserError):
            loader.load_state_dict({"dp_rank_0": raw, "world_size": 1})
    for bad in (128.0, True, -128, "128"):
        with pytest.raises(UserError, match="seq_len"):
            build(seq_len=bad)


@pytest.mark.parametrize("seed", [-1, True, 1.5, "0"])
def test_a_seed_numpy_cannot_take_is_one_line(data: Path, seed: object) -> None:
    """``VSLLoader(seed=-1)`` (and torchtitan's ``DDDataLoader.Config(seed=-1)``) raised numpy's
    "expected non-negative integer" from deep in the plan; a bool or float seed passed as 1 / 1."""
    ds = open_dataset(data)
    with pytest.raises(UserError, match=f"seed {seed!r} must be an integer >= 0"):
        VSLLoader(ds, tokens_per_step=1024, seed=seed)
    from ddecomp.loading.concat import ConcatChunkLoader

    with pytest.raises(UserError, match="seed"):
        ConcatChunkLoader(ds, seq_len=128, tokens_per_step=1024, seed=seed)  # type: ignore[arg-type]
    pytest.importorskip("torchtitan")
    from ddecomp.integrations.torchtitan import DDDataLoader

    with pytest.raises(UserError, match="seed"):
        DDDataLoader.Config(dataset_path=str(data), seed=seed).build(  # type: ignore[arg-type]
            dp_world_size=1, dp_rank=0, seq_len=1024, local_batch_size=1
        )
