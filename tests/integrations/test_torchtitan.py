"""DDDataLoader through torchtitan 0.3.0's interfaces: Config.build with the trainer's arguments,
its batch format, and its DCP CheckpointManager per dp rank (torchtitan's Trainer itself runs on
the CPU only with stand-ins: tests/benchmarks/test_gpu_torchtitan.py, and the module docstring)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("torchtitan")

from torch.distributed.checkpoint.stateful import Stateful
from torchtitan.components.dataloader import BaseDataLoader

from ddecomp import TokensConfig, VSLLoader, World, open_dataset, prepare_tokens
from ddecomp.errors import UserError
from ddecomp.integrations.torchtitan import DDDataLoader
from tests._fixtures import EOS, identity_tokens, random_lengths, run_torchrun

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tt") / "ds"
    toks = identity_tokens(random_lengths(300, seed=1, hi=300))
    prepare_tokens(TokensConfig(toks, root, eos_id=EOS, min_len=16, max_len=64, tails="pack",
                                tail_len=8))  # fmt: skip
    return root


def build(data: Path, rank: int = 0, world: int = 2, **kw: Any) -> DDDataLoader:
    """As torchtitan's Trainer builds its dataloader (the same keyword arguments)."""
    args: dict[str, Any] = {"seq_len": 128, "local_batch_size": 1, **kw}
    cfg_kw = {k: args.pop(k) for k in ("total_tokens", "seed") if k in args}
    loader = DDDataLoader.Config(dataset_path=str(data), **cfg_kw).build(
        dp_world_size=world, dp_rank=rank, tokenizer=None, snapshot_every_n_steps=None, **args
    )
    assert isinstance(loader, DDDataLoader)
    return loader


def test_batches_are_the_flat_layout_in_torchtitans_format(data: Path) -> None:
    ds = open_dataset(data)
    for rank in range(2):
        loader = build(data, rank)
        assert isinstance(loader, BaseDataLoader)
        assert isinstance(loader, Stateful)
        ref = VSLLoader(ds, tokens_per_step=256, world=World(rank, 2), layout="flat")
        n, lengths = 0, set()
        for (inputs, labels), want in zip(loader, ref, strict=False):
            assert set(inputs) == {"input", "positions"}  # what Decoder.forward takes as kwargs
            assert inputs["input"].shape == inputs["positions"].shape == labels.shape == (1, 128)
            assert torch.equal(inputs["input"], want["input_ids"])
            assert torch.equal(labels, want["labels"])
            # torchtitan finds a document where positions restart at 0: exactly our sequences
            starts = torch.nonzero(inputs["positions"][0] == 0).flatten().to(torch.int32)
            assert torch.equal(starts, want["cu_seqlens"][:-1])
            lengths.add(want["seq_len"])
            n += 1
        assert n == len(ref)
        assert len(lengths) >= 3  # vacuity guard: several sequence lengths, one shape


def test_local_batch_size_cuts_rows_at_sequence_boundaries(data: Path) -> None:
    loader = build(data, 0, 1, seq_len=64, local_batch_size=4, total_tokens=256 * 6)
    got = list(loader)
    assert len(got) == 6  # the run's plan, then torchtitan's exhaustion (StopIteration)
    for inputs, labels in got:
        assert inputs["input"].shape == labels.shape == (4, 64)
        assert bool((inputs["positions"][:, 0] == 0).all())  # every row starts a sequence


def test_without_total_tokens_the_loader_goes_on_to_the_next_epoch(data: Path) -> None:
    loader = build(data, 0, 2)
    steps = len(loader.loader)
    seen = [b for b, _ in zip(loader, range(steps + 2), strict=False)]
    assert len(seen) == steps + 2
    assert loader.loader.epoch == 1


def test_state_round_trip_in_process_and_refusals(data: Path) -> None:
    loader = build(data, 1, 2)
    it = iter(loader)
    for _ in range(5):
        next(it)
    state = loader.state_dict()
    assert set(state) == {"dp_rank_1", "world_size"}
    want = [next(it) for _ in range(3)]
    again = build(data, 1, 2)
    again.load_state_dict(state)
    got = [b for b, _ in zip(again, range(3), strict=False)]
    for (a, la), (b, lb) in zip(want, got, strict=True):
        assert torch.equal(a["input"], b["input"])
        assert torch.equal(la, lb)
    with pytest.raises(UserError, match="dp_rank_0"):
        build(data, 0, 2).load_state_dict(state)  # another rank's state
    with pytest.raises(UserError, match="dp world size 2"):
        build(data, 1, 4).load_state_dict(state)
    with pytest.raises(UserError, match="seed"):
        build(data, 1, 2, seed=9).load_state_dict(state)  # another data order
    with pytest.raises(UserError, match="tokens_per_step"):  # another batch size: another plan
        build(data, 1, 2, local_batch_size=2).load_state_dict(state)
    # seq_len and local_batch_size traded at the same tokens per step: the same plan and
    # tokens, only cut into rows differently, so the state carries over
    cut = build(data, 1, 2, seq_len=64, local_batch_size=2)
    cut.load_state_dict(state)
    inputs, _ = next(iter(cut))
    assert torch.equal(inputs["input"].reshape(1, 128), want[0][0]["input"])


@pytest.mark.parametrize("seq_len", [96, 32, 0])
def test_seq_len_must_hold_whole_sequences(data: Path, seq_len: int) -> None:
    with pytest.raises(UserError, match="multiple of the dataset's longest sequence 64"):
        build(data, seq_len=seq_len)


def test_no_dataset_is_one_line() -> None:
    with pytest.raises(UserError, match="dataset_path"):
        DDDataLoader.Config().build(dp_world_size=1, dp_rank=0, seq_len=64)


def test_torchtitans_varlen_metadata_reads_our_sequences(data: Path) -> None:
    """torchtitan's own mask builder (its model package imports triton: GPU machines)."""
    pytest.importorskip("triton")
    from torchtitan.models.common.attention import create_varlen_metadata_for_document

    ds = open_dataset(data)
    ref = VSLLoader(ds, tokens_per_step=256, world=World(0, 2), layout="flat")
    for (inputs, _), want in zip(build(data, 0), ref, strict=False):
        meta = create_varlen_metadata_for_document(inputs["positions"])
        assert torch.equal(meta.cu_seq_q.cpu().to(torch.int32), want["cu_seqlens"])


@pytest.mark.slow
def test_torchtitan_checkpoint_manager_saves_and_restores_every_dp_rank(
    data: Path, tmp_path: Path
) -> None:
    """torchtitan's DCP CheckpointManager (model, optimizer, LR schedule and our loader), two dp
    ranks over gloo: each rank's state is saved under its own key and restored exactly."""
    res = run_torchrun(str(HERE / "_torchtitan_dcp.py"), str(data), str(tmp_path))
    assert res.returncode == 0, res.stderr[-3000:]
    out = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for r in out:
        assert r["loaded"] is True
        assert r["same"] is True
        assert r["step"] == 7
    assert out[0]["first"] != out[1]["first"]  # the ranks serve different slices
    from torch.distributed.checkpoint import FileSystemReader

    meta = FileSystemReader(str(tmp_path / "ckpt" / "step-3")).read_metadata()
    keys = set(meta.state_dict_metadata)
    assert {"dataloader.dp_rank_0", "dataloader.dp_rank_1"} <= keys, sorted(keys)
    assert {"weight", "bias", "optimizer.state.weight.exp_avg"} <= keys  # with model, optimizer


def test_import_ddecomp_does_not_import_torchtitan() -> None:
    from tests._fixtures import run_python

    code = "import sys, ddecomp, ddecomp.integrations; assert 'torchtitan' not in sys.modules"
    res = run_python("-c", code)
    assert res.returncode == 0, res.stderr
