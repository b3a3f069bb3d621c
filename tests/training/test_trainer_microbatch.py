"""The trainer's micro-batches and its one host-to-device copy per batch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ddecomp.cli.train import config_from_args
from ddecomp.data.dataset import open_dataset
from ddecomp.errors import UserError
from ddecomp.loading.concat import ConcatChunkLoader
from ddecomp.loading.vsl import VSLLoader
from ddecomp.loading.world import World
from ddecomp.training.hostcopy import HostToDevice, shared_buffer
from ddecomp.training.loop import train
from tests._fixtures import run_python, run_torchrun
from tests.training._corpus import TPS, cfg_for, make_dataset


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("micro") / "ds")


def _losses(run: Path) -> list[float]:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows]


@pytest.mark.parametrize("method", ["dd", "concat-dm"])
def test_micro_batched_run_matches_the_unsplit_run(data: Path, tmp_path: Path, method: str) -> None:
    """Rows of 16..128 tokens in micro-batches of 256 tokens (DD: 2 to 16 per step at 1024
    tokens; concat-dm: 4 slices of 2 rows, cu_seqlens re-based): the same losses to float
    rounding."""
    kw: dict[str, object] = {"method": method, "tokens": 6 * TPS, "warmup": 1}
    train(cfg_for(data, tmp_path / "whole", **kw))
    s = train(cfg_for(data, tmp_path / "micro", micro_batch_tokens=256, **kw))
    assert s["finished"]
    whole, micro = _losses(tmp_path / "whole"), _losses(tmp_path / "micro")
    assert len(whole) == len(micro) == 6
    np.testing.assert_allclose(micro, whole, rtol=1e-4)


def test_micro_batch_below_one_row_is_refused(data: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="at least 128"):
        train(cfg_for(data, tmp_path / "run", tokens=2 * TPS, warmup=1, micro_batch_tokens=64))
    with pytest.raises(UserError, match="micro-batch-tokens"):
        cfg_for(data, tmp_path / "run", micro_batch_tokens=0)


def test_cli_flag_reaches_the_config() -> None:
    import argparse

    from ddecomp.cli import train as cli_train

    p = argparse.ArgumentParser()
    cli_train.register(p.add_subparsers())
    args = p.parse_args(["train", "DIR", "--out", "RUN", "--micro-batch-tokens", "4096"])
    assert config_from_args(args).micro_batch_tokens == 4096


def test_one_copy_of_the_shared_buffer_per_batch(data: Path) -> None:
    ds = open_dataset(data)
    batch = next(iter(VSLLoader(ds, tokens_per_step=TPS, world=World())))
    buf = shared_buffer(batch)
    assert buf is not None
    assert buf.shape == (batch["input_ids"].shape[0], batch["seq_len"] + 1)
    assert buf.data_ptr() == batch["input_ids"].data_ptr()
    assert torch.equal(buf[:, :-1], batch["input_ids"])
    assert torch.equal(buf[:, 1:], batch["labels"])
    h2d = HostToDevice(torch.device("cpu"))
    parts, shared = h2d.parts(batch)
    assert shared
    assert len(parts) == 1  # one transfer carries input_ids and labels
    x, y, pos = h2d(batch)
    assert torch.equal(x, batch["input_ids"])
    assert torch.equal(y, batch["labels"])
    assert x.is_contiguous()
    assert pos is None
    # masked labels are not a view: input_ids, labels and position_ids side by side, one stage
    cb = next(iter(ConcatChunkLoader(ds, seq_len=128, tokens_per_step=TPS, doc_mask=True,
                                     world=World())))  # fmt: skip
    assert shared_buffer(cb) is None
    parts, shared = h2d.parts(cb)
    assert not shared
    assert len(parts) == 3
    x, y, pos = h2d(cb)
    assert pos is not None
    assert torch.equal(x, cb["input_ids"])
    assert torch.equal(y, cb["labels"])
    assert torch.equal(pos, cb["position_ids"])


@pytest.mark.slow
def test_two_ranks_with_micro_batches_match_one_unsplit_process(data: Path, tmp_path: Path) -> None:
    """DDP over gloo, each rank's share in micro-batches of 128 tokens (only the last backward
    all-reduces): the losses of one process without micro-batches, to float rounding."""
    common = ["--tokens", str(5 * TPS), "--tokens-per-step", str(TPS), "--warmup", "1",
              "--device", "cpu", "--no-progress", "--eval-tokens", "512"]  # fmt: skip
    one = run_python("-m", "ddecomp", "train", str(data), "--out", str(tmp_path / "one"), *common)
    assert one.returncode == 0, one.stderr
    two = run_torchrun(
        "-m",
        "ddecomp",
        "train",
        str(data),
        "--out",
        str(tmp_path / "two"),
        *common,
        "--micro-batch-tokens",
        "128",
    )
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert len(a) == len(b) == 5
    np.testing.assert_allclose(b, a, rtol=2e-4)


def test_staging_copies_each_batch_once_and_keeps_earlier_results(data: Path) -> None:
    """The staging path (pinned on CUDA) run on the CPU: one copy per batch whatever its parts,
    the values of every batch intact after the stage is refilled by the next ones."""
    ds = open_dataset(data)
    batches = list(VSLLoader(ds, tokens_per_step=TPS, cycles=1, world=World()))[::8]
    batches += list(ConcatChunkLoader(ds, seq_len=128, tokens_per_step=TPS, doc_mask=True,
                                      world=World()))[:2]  # fmt: skip
    assert len({b["seq_len"] for b in batches}) > 2  # vacuity: the stage sees several shapes
    h2d = HostToDevice(torch.device("cpu"), stage=True)
    moved = [h2d(b) for b in batches]
    assert h2d.copies == len(batches)
    for b, (x, y, pos) in zip(batches, moved, strict=True):
        assert torch.equal(x, b["input_ids"])
        assert torch.equal(y, b["labels"])
        assert (pos is None) == ("position_ids" not in b)
        if pos is not None:
            assert torch.equal(pos, b["position_ids"])
