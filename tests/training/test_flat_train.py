"""``--layout flat``: the same step as the rows layout, no leak across sequences, one graph."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from ddecomp.data.dataset import open_dataset
from ddecomp.errors import UserError
from ddecomp.loading.protocols import IGNORE_INDEX, Batch
from ddecomp.loading.vsl import VSLLoader
from ddecomp.preparing.pipeline import TokensConfig, prepare_tokens
from ddecomp.training.attention import attend, make_doc_mask, make_flat_mask
from ddecomp.training.config import TrainConfig
from ddecomp.training.feed import micro_batches
from ddecomp.training.hostcopy import HostToDevice
from ddecomp.training.loop import train
from ddecomp.training.model import GPT, model_config
from tests._fixtures import run_python, run_torchrun
from tests.training._corpus import EOS, TPS, cfg_for, learnable_tokens, make_dataset

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("flat") / "ds")


@pytest.fixture(scope="module")
def tails(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("flat") / "tails"
    prepare_tokens(TokensConfig(learnable_tokens(60_000, 1), root, eos_id=EOS, min_len=16,
                                max_len=128, vocab_size=64, tails="pack", tail_len=16))  # fmt: skip
    return root


def _grads(model: GPT, batch: Batch, cfg: TrainConfig) -> tuple[float, list[torch.Tensor]]:
    """The trainer's forward/backward of one batch (its micro-batches and masks): summed loss
    and the gradients."""
    model.zero_grad(set_to_none=True)
    x, y, pos = HostToDevice(CPU)(batch)
    total = torch.zeros(())
    for mx, my, mpos, mask in micro_batches(batch, x, y, pos, cfg, CPU):
        logits = model(mx, mpos, mask)
        loss = torch.nn.functional.cross_entropy(
            logits.flatten(0, 1), my.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
        )
        loss.backward()
        total += loss.detach()
    return float(total), [p.grad.clone() for p in model.parameters() if p.grad is not None]


@pytest.mark.parametrize("which", ["data", "tails"])
@pytest.mark.parametrize("kw", [{}, {"compile": True}, {"micro_batch_tokens": 256}])
def test_one_step_flat_equals_rows(
    data: Path, tails: Path, which: str, kw: dict[str, object]
) -> None:
    """Loss and gradients of every step length agree (rtol 1e-5) on the eager CPU path
    (attention per sequence), the compiled path's dense stream mask, and micro-batches."""
    root = data if which == "data" else tails
    ds = open_dataset(root)
    torch.manual_seed(0)
    model = GPT(model_config("tiny", 64))
    rows_cfg = replace(cfg_for(root, root / "unused"), **kw)  # type: ignore[arg-type]
    flat_cfg = replace(rows_cfg, layout="flat")
    rows_ld = VSLLoader(ds, tokens_per_step=TPS, seed=1)
    flat_ld = VSLLoader(ds, tokens_per_step=TPS, seed=1, layout="flat")
    seen: set[int] = set()
    masked = 0
    for r, f in zip(rows_ld, flat_ld, strict=True):
        if (r["seq_len"] in seen or len(seen) >= 3) and ("cu_seqlens" not in r or masked >= 2):
            continue
        seen.add(r["seq_len"])
        masked += "cu_seqlens" in r
        lr, gr = _grads(model, r, rows_cfg)
        lf, gf = _grads(model, f, flat_cfg)
        assert lf == pytest.approx(lr, rel=1e-5)
        assert len(gr) == len(gf) > 0
        for a, b in zip(gr, gf, strict=True):
            # rtol 1e-5 of the tensor's scale: an element near 0 has no relative precision
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5 * float(a.abs().max()))
    assert len(seen) >= 3  # vacuity guard: several lengths
    assert masked > 0 if which == "tails" else masked == 0


def test_the_gpu_paths_block_mask_keeps_sequences_apart() -> None:
    """The flex block mask of a flat stream (the GPU path), through flex attention's reference
    implementation (uncompiled, on the CPU): changing one sequence's keys and values moves no
    other sequence's output, and equals the dense stream mask's attention."""
    from torch.nn.attention.flex_attention import flex_attention

    L, n, H, hd = 128, 3, 2, 16
    T = L * n
    cu = torch.tensor([0, 128, 200, 256, 384], dtype=torch.int32)  # a piece inside sequence 1
    flex = make_doc_mask(cu, 1, T, CPU, kind="flex")
    dense = make_flat_mask(cu, L, T, CPU, compiled=True)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, H, T, hd, generator=g) for _ in range(3))
    k2, v2 = k.clone(), v.clone()
    k2[..., :L, :] += 1.0
    v2[..., :L, :] += 1.0  # sequence 0 changes
    a = flex_attention(q, k, v, block_mask=flex.block_mask)
    b = flex_attention(q, k2, v2, block_mask=flex.block_mask)
    torch.testing.assert_close(b[..., L:, :], a[..., L:, :], rtol=0, atol=1e-6)
    assert not torch.allclose(b[..., :L, :], a[..., :L, :])
    torch.testing.assert_close(a, attend(q, k, v, dense), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("path", ["chunk", "dense"])
def test_changing_one_sequence_moves_no_other_logits(path: str) -> None:
    torch.manual_seed(0)
    model = GPT(model_config("tiny", 64)).eval()
    L, n = 32, 4
    T = L * n
    x = torch.randint(0, 64, (1, T))
    pos = torch.arange(L).repeat(n)[None]
    cu = torch.arange(0, T + 1, L, dtype=torch.int32)
    mask = make_flat_mask(cu, L, T, CPU, compiled=path == "dense")
    assert (mask.chunk is not None) == (path == "chunk")
    x2 = x.clone()
    x2[0, L : 2 * L] = (x2[0, L : 2 * L] + 1) % 64  # sequence 1 changes
    other = torch.ones(T, dtype=torch.bool)
    other[L : 2 * L] = False
    with torch.no_grad():
        a, b = model(x, pos, mask), model(x2, pos, mask)
        leaky = model(x, pos, None), model(x2, pos, None)  # causal over the stream: leaks
    torch.testing.assert_close(b[0, other], a[0, other], rtol=0, atol=1e-6)
    assert not torch.allclose(b[0, L : 2 * L], a[0, L : 2 * L])  # the changed one moved
    assert not torch.allclose(leaky[1][0, 2 * L :], leaky[0][0, 2 * L :])  # the test can fail


def test_a_flat_run_trains_like_rows_and_resumes_from_rows(data: Path, tmp_path: Path) -> None:
    rows = train(cfg_for(data, tmp_path / "rows", tokens=8 * TPS))
    flat = train(cfg_for(data, tmp_path / "flat", tokens=8 * TPS, layout="flat", stop_after=4))
    assert not flat["finished"]
    # a run stopped in rows continues in flat: the layout changes no order and no gradient
    half = cfg_for(data, tmp_path / "mixed", tokens=8 * TPS, stop_after=4)
    train(half)
    mixed = train(replace(half, layout="flat", stop_after=None, resume=True))
    assert mixed["finished"]

    def losses(run: str) -> list[float]:
        lines = (tmp_path / run / "metrics.jsonl").read_text().splitlines()
        return [json.loads(x)["loss"] for x in lines]

    ref = losses("rows")
    assert len(ref) == 8
    lines = (tmp_path / "rows" / "metrics.jsonl").read_text().splitlines()
    assert len({json.loads(x)["seq_len"] for x in lines}) >= 2  # the rows changed shape
    np.testing.assert_allclose(losses("flat"), ref[:4], rtol=1e-5)
    np.testing.assert_allclose(losses("mixed"), ref, rtol=1e-5)
    assert rows["loader"] == mixed["loader"] or rows["loader"]["steps"] == mixed["loader"]["steps"]


def test_layout_errors() -> None:
    with pytest.raises(UserError, match="--layout 'thd'"):
        TrainConfig(data="d", out="o", layout="thd")


@pytest.mark.slow  # two inductor compilations of four graphs: ~60 s idle, 300 s on a busy 2-core
def test_compile_builds_one_graph_flat_and_one_per_length_rows(data: Path, tmp_path: Path) -> None:
    """A --compile run over several bucket lengths: the flat layout compiles one graph for the
    whole run, the rows layout one per length; neither compiles inside the timed loop."""
    kw: dict[str, object] = {"tokens": 12 * TPS, "deterministic": False, "compile": True}
    rows = train(cfg_for(data, tmp_path / "rows", **kw))
    flat = train(cfg_for(data, tmp_path / "flat", layout="flat", **kw))
    lines = (tmp_path / "rows" / "metrics.jsonl").read_text().splitlines()
    lengths = {json.loads(x)["seq_len"] for x in lines}
    assert len(lengths) >= 3  # vacuity guard: the rows run changed shape
    assert rows["graphs_compiled"] == len(lengths)
    assert flat["graphs_compiled"] == 1
    assert rows["graphs_compiled_in_loop"] == flat["graphs_compiled_in_loop"] == 0


@pytest.mark.slow
def test_flat_under_ddp_matches_rows_under_ddp_and_one_process(data: Path, tmp_path: Path) -> None:
    """``ddecomp train --layout flat`` with 2 gloo processes: each rank's ``[1, T/2]`` stream
    gives the losses of the rows layout under DDP (rtol 1e-5) and of one flat process."""
    common = ["--tokens", str(6 * TPS), "--tokens-per-step", str(TPS), "--warmup", "1",
              "--device", "cpu", "--no-progress", "--eval-tokens", "512"]  # fmt: skip

    def run(name: str, ranks: int, *extra: str) -> list[dict[str, float]]:
        argv = ("-m", "ddecomp", "train", str(data), "--out", str(tmp_path / name), *common, *extra)
        r = run_torchrun(*argv) if ranks == 2 else run_python(*argv)
        assert r.returncode == 0, r.stderr[-3000:]
        summary = json.loads((tmp_path / name / "summary.json").read_text())
        assert summary["loader"]["layout"] == (extra[-1] if extra else "rows")
        assert summary["world_size"] == ranks
        lines = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
        return [json.loads(x) for x in lines]

    one_flat = run("one_flat", 1, "--layout", "flat")
    two_rows = run("two_rows", 2)
    two_flat = run("two_flat", 2, "--layout", "flat")
    assert len(one_flat) == len(two_rows) == len(two_flat) == 6
    assert len({r["seq_len"] for r in two_rows}) >= 2  # several lengths: one shape in flat only
    assert [r["seq_len"] for r in two_flat] == [r["seq_len"] for r in two_rows]
    loss = [[r["loss"] for r in m] for m in (one_flat, two_rows, two_flat)]
    np.testing.assert_allclose(loss[2], loss[1], rtol=1e-5)
    np.testing.assert_allclose(loss[2], loss[0], rtol=2e-4)  # cross-rank sums: float rounding
