"""The reference trainer: logs, schedule, exact resume, DDP equivalence, every method runs."""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from ddecomp.cli import main
from ddecomp.errors import UserError
from ddecomp.training.builders import cosine_schedule
from ddecomp.training.loop import METHODS, train
from tests._fixtures import run_python, run_torchrun
from tests.training._corpus import TPS, cfg_for, make_dataset


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("train") / "ds")


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def test_metrics_and_eval_logs(data: Path, tmp_path: Path) -> None:
    s = train(cfg_for(data, tmp_path / "run", eval_every=8))
    rows = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, 17))
    assert s["finished"]
    assert s["tokens"] == 16 * TPS
    lengths = {r["seq_len"] for r in rows}
    assert lengths <= {16, 32, 64, 128}
    assert len(lengths) > 1  # DD changes length between steps
    assert rows[0]["seq_len"] == 128  # the out-of-memory probe comes first
    for r in rows:
        assert r["tokens"] == r["step"] * TPS
        assert r["flops"] > 0
        assert r["mfu"] is None  # no known peak for a CPU
        assert math.isfinite(r["loss"])
    assert np.all(np.diff([r["elapsed_s"] for r in rows]) > 0)
    assert np.mean([r["loss"] for r in rows[-4:]]) < rows[0]["loss"] - 0.3  # it learns
    ev = read_jsonl(tmp_path / "run" / "eval.jsonl")
    assert [e["step"] for e in ev] == [8, 16]
    assert set(ev[-1]["val_loss"]) == {"16", "32", "64", "128"}  # no length reaches 256
    assert ev[-1]["val_loss_mean"] < ev[0]["val_loss_mean"]
    assert ev[-1]["position"]["seq_len"] == 128
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["final_eval"]["step"] == 16


def test_resume_continues_exactly(data: Path, tmp_path: Path) -> None:
    """Stop at step 5 (checkpoint at 4 and at the stop), resume: every loss, eval and the final
    weights equal the uninterrupted run's."""
    full = cfg_for(data, tmp_path / "full", checkpoint_every=4, eval_every=6)
    train(full)
    part = cfg_for(data, tmp_path / "part", checkpoint_every=4, eval_every=6)
    s1 = train(replace(part, stop_after=5))
    assert not s1["finished"]
    assert s1["steps"] == 5
    train(replace(part, resume=True))
    a = read_jsonl(tmp_path / "full" / "metrics.jsonl")
    b = read_jsonl(tmp_path / "part" / "metrics.jsonl")
    assert len(a) == len(b) == 16
    assert [r["loss"] for r in a] == [r["loss"] for r in b]
    assert [r["seq_len"] for r in a] == [r["seq_len"] for r in b]
    ea = read_jsonl(tmp_path / "full" / "eval.jsonl")
    eb = read_jsonl(tmp_path / "part" / "eval.jsonl")
    assert [e["val_loss"] for e in ea] == [e["val_loss"] for e in eb]
    wa = torch.load(tmp_path / "full" / "checkpoints" / "step_0000016.pt", weights_only=True)
    wb = torch.load(tmp_path / "part" / "checkpoints" / "step_0000016.pt", weights_only=True)
    for k, v in wa["model"].items():
        assert torch.equal(v, wb["model"][k]), k


def test_resume_refuses_a_changed_config(data: Path, tmp_path: Path) -> None:
    cfg = cfg_for(data, tmp_path / "run", stop_after=2)
    train(cfg)
    with pytest.raises(UserError, match=r"lr was 0\.003 in the checkpoint, now 0\.001"):
        train(replace(cfg, lr=1e-3, resume=True, stop_after=None))
    with pytest.raises(UserError, match="already holds a run"):
        train(replace(cfg, stop_after=None))


def test_no_held_out_split_is_reported(tmp_path: Path) -> None:
    ds = make_dataset(tmp_path / "ds", n_tokens=40_000, val_fraction=0.0)
    s = train(cfg_for(ds, tmp_path / "run", tokens=4 * TPS, warmup=1))
    assert "val-fraction" in s["eval_skipped"]
    assert (tmp_path / "run" / "eval.jsonl").read_text() == ""


@pytest.mark.parametrize("method", [m for m in METHODS if m != "dd"])
def test_baseline_methods_train(data: Path, tmp_path: Path, method: str) -> None:
    s = train(cfg_for(data, tmp_path / method, method=method, tokens=6 * TPS, warmup=1))
    rows = read_jsonl(tmp_path / method / "metrics.jsonl")
    assert s["finished"]
    assert len(rows) == 6
    assert {r["seq_len"] for r in rows} == {128}
    from ddecomp.attention_cost import causal_pairs
    from ddecomp.training.model import model_config, train_flops

    mcfg = model_config("tiny", 64)
    causal = train_flops(mcfg, TPS, causal_pairs(128, TPS // 128))
    flops = [r["flops"] for r in rows]
    if method == "concat":
        assert flops == [causal] * 6
    else:  # a document mask attends to fewer pairs than causal attention over whole rows
        assert max(flops) <= causal
        assert sum(flops) < 6 * causal


@pytest.mark.parametrize("method", ["dd", "concat-dm"])
def test_compile_warms_every_shape_and_matches_eager(
    data: Path, tmp_path: Path, method: str
) -> None:
    """``--compile`` compiles each batch shape before the clock starts (DD: one per bucket; the
    loader's views and position ids must not add stride variants), so the timed loop compiles
    nothing, and the losses are eager's up to float rounding."""
    kw: dict[str, object] = {"method": method, "tokens": 12 * TPS, "deterministic": False}
    s = train(cfg_for(data, tmp_path / "compiled", compile=True, **kw))
    eager = train(cfg_for(data, tmp_path / "eager", **kw))
    rows = read_jsonl(tmp_path / "compiled" / "metrics.jsonl")
    lengths = {r["seq_len"] for r in rows}
    # vacuity: DD changes shape mid-run (a 12-step run plan gives the smallest bucket no step)
    assert len(lengths) >= 3 if method == "dd" else len(lengths) == 1
    assert s["compile_s"] > 0
    assert s["graphs_compiled_in_loop"] == 0
    assert eager["graphs_compiled_in_loop"] is None
    ref = read_jsonl(tmp_path / "eager" / "metrics.jsonl")
    assert [r["seq_len"] for r in rows] == [r["seq_len"] for r in ref]
    np.testing.assert_allclose([r["loss"] for r in rows], [r["loss"] for r in ref], rtol=2e-3)


def test_no_checkpoints_writes_none(data: Path, tmp_path: Path) -> None:
    s = train(cfg_for(data, tmp_path / "run", tokens=4 * TPS, warmup=1, checkpoints=False))
    assert s["finished"]
    assert s["checkpoint_s"] == 0
    assert not list((tmp_path / "run").rglob("*.pt"))
    train(cfg_for(data, tmp_path / "ckpt", tokens=4 * TPS, warmup=1))
    assert list((tmp_path / "ckpt").rglob("*.pt"))  # vacuity guard: the default writes one


def test_schedule_warmup_then_cosine_to_the_floor() -> None:
    f = cosine_schedule(warmup=10, total=100, min_ratio=0.1)
    assert [f(s) for s in range(3)] == [0.1, 0.2, 0.3]
    assert f(9) == 1.0
    assert f(10) == pytest.approx(1.0)
    assert f(99) == pytest.approx(0.1)
    vals = [f(s) for s in range(10, 100)]
    assert all(a >= b for a, b in itertools.pairwise(vals))


@pytest.mark.parametrize(
    ("kw", "msg"),
    [
        ({"method": "ddp"}, "--method 'ddp'"),
        ({"tokens": 100}, "--tokens 100 must be at least --tokens-per-step 1024"),
        ({"warmup": 16}, r"--warmup 16 steps must be in \[0, 16\)"),
        ({"max_len": 100}, "--max-len 100 must be a power of two"),
        ({"size": "2b"}, "--size '2b'"),
        ({"checkpoints": False, "stop_after": 4}, "--no-checkpoints cannot be combined"),
    ],
)
def test_config_errors_quote_values(kw: dict[str, object], msg: str) -> None:
    with pytest.raises(UserError, match=msg):
        cfg_for(Path("d"), Path("o"), **kw)


def test_cli_user_error_exits_2(data: Path, tmp_path: Path) -> None:
    out = str(tmp_path / "r")
    r = run_python("-m", "ddecomp", "train", str(data), "--out", out,
             "--tokens-per-step", "1000", "--tokens", "4000", "--warmup", "1")  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert "tokens_per_step 1000" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_two_ranks_under_torchrun_match_one_process(data: Path, tmp_path: Path) -> None:
    """DDP over gloo with 2 processes: the same global batches, so the same losses (to float
    rounding of the cross-rank sums) as one process."""
    common = ["--tokens", str(6 * TPS), "--tokens-per-step", str(TPS), "--warmup", "1",
              "--device", "cpu", "--no-progress", "--eval-tokens", "512"]  # fmt: skip
    one = run_python("-m", "ddecomp", "train", str(data), "--out", str(tmp_path / "one"), *common)
    assert one.returncode == 0, one.stderr
    two = run_torchrun("-m", "ddecomp", "train", str(data), "--out", str(tmp_path / "two"), *common)
    assert two.returncode == 0, two.stderr[-3000:]
    a = read_jsonl(tmp_path / "one" / "metrics.jsonl")
    b = read_jsonl(tmp_path / "two" / "metrics.jsonl")
    assert len(a) == len(b) == 6
    assert [r["seq_len"] for r in a] == [r["seq_len"] for r in b]
    np.testing.assert_allclose([r["loss"] for r in a], [r["loss"] for r in b], rtol=2e-4)
    ea = read_jsonl(tmp_path / "one" / "eval.jsonl")[-1]
    eb = read_jsonl(tmp_path / "two" / "eval.jsonl")[-1]
    assert ea["val_tokens"] == eb["val_tokens"]
    for L, v in ea["val_loss"].items():
        assert eb["val_loss"][L] == pytest.approx(v, rel=1e-3)


def test_training_imports_without_the_prepare_only_packages() -> None:
    """The GPU machine's image has no zstandard: training, comparing and step costs must import
    without it (only ``prepare`` reads compressed input)."""
    code = (
        "import sys; sys.modules['zstandard'] = None\n"
        "import ddecomp, ddecomp.training.loop, ddecomp.reporting.compare\n"
        "import ddecomp.training.stepcost, ddecomp.cli\n"
        "try:\n    import ddecomp.preparing.ingest\nexcept ImportError:\n    print('blocked')\n"
    )
    r = run_python("-c", code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "blocked"  # vacuity guard: the block really applies


def test_every_method_trains_on_a_blend_and_resume_refuses_another_mix(
    data: Path, tmp_path: Path
) -> None:
    from ddecomp.reporting.compare import compare, load_run

    other = make_dataset(tmp_path / "other", n_tokens=40_000, seed=1)
    both = (str(data), str(other))
    for method in METHODS:
        out = tmp_path / method
        s = train(cfg_for(both, out, method=method, shares=(0.5, 0.5), tokens=8 * TPS))
        assert s["finished"]
        blend = json.loads((out / "config.json").read_text())["dataset"]["blend"]
        assert [x["source"] for x in blend["sources"]] == list(both)
        assert [x["share"] for x in blend["sources"]] == pytest.approx([0.5, 0.5], abs=0.02)
        assert read_jsonl(out / "eval.jsonl")[-1]["val_loss_mean"] > 0  # held-out blend rows
    assert len(compare([load_run(tmp_path / m) for m in METHODS])) == len(METHODS)
    cut = tmp_path / "cut"
    train(cfg_for(both, cut, factors=(1.0, 1.0), stop_after=3))
    with pytest.raises(UserError, match="the dataset changed"):
        train(cfg_for(both, cut, factors=(1.0, 0.5), resume=True))
    with pytest.raises(UserError, match="1 blend shares for 2 datasets"):
        train(cfg_for(both, cut, shares=(1.0,)))
    argv = ["train", *both, "--out", str(tmp_path / "cli"), "--factors", "1,0.5", "--tokens",
            str(4 * TPS), "--tokens-per-step", str(TPS), "--warmup", "1", "--device", "cpu",
            "--no-progress", "--eval-tokens", "512"]  # fmt: skip
    assert main(argv) == 0
    config = json.loads((tmp_path / "cli" / "config.json").read_text())
    assert config["train"]["factors"] == [1.0, 0.5]
    assert [x["factor"] for x in config["dataset"]["blend"]["sources"]] == [1.0, 0.5]
