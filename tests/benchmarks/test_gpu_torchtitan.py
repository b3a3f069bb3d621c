"""benchmarks/gpu_torchtitan.py: its checks fail on a wrong run, and its --smoke path runs
torchtitan's Trainer on the CPU (with triton) or stops after the loader (without)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import gpu_torchtitan as gt

from ddecomp import VSLLoader, open_dataset
from tests._fixtures import run_python

SCRIPT = Path(gt.__file__)


@pytest.fixture(scope="module")
def args(tmp_path_factory: pytest.TempPathFactory) -> argparse.Namespace:
    data = gt.smoke_dataset(tmp_path_factory.mktemp("gt") / "data")
    return argparse.Namespace(data=data, seq_len=128, local_batch_size=1, seed=0, steps=8,
                              resume_rtol=1e-5)  # fmt: skip


def runs(a: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """What a right run records: the plan's steps in order, a falling loss, the same second half."""
    ref = VSLLoader(open_dataset(a.data), tokens_per_step=128, layout="flat",
                    total_tokens=gt.run_tokens(a))  # fmt: skip
    batches = [(b["input_ids"], b["position_ids"], b["labels"]) for b in ref]
    log = [(s + 1, 8.0 - 0.1 * s, float(s)) for s in range(a.steps)]
    half = a.steps // 2
    full = {"batches": batches, "log": log}
    return full, {"batches": batches[half:], "log": log[half:], "first_step": half + 1}


def test_check_passes_a_right_run_and_fails_wrong_ones(args: argparse.Namespace) -> None:
    full, resumed = runs(args)
    got = gt.check(args, full, resumed)
    assert len(set(got["lengths"])) >= 2
    assert got["rows"] > args.steps

    def fails(full: dict[str, Any], resumed: dict[str, Any], match: str) -> None:
        with pytest.raises(AssertionError, match=match):
            gt.check(args, full, resumed)

    b = full["batches"]
    fails({**full, "batches": [b[0], *b[:-1]]}, resumed, "step 1")  # a step served twice
    fails({**full, "batches": [b[1], b[0], *b[2:]]}, resumed, "step 0")  # reordered
    x, p, y = b[2]
    shifted = (x, torch.roll(p, 1, dims=1), y)  # other segments: attention would differ
    fails({**full, "batches": [*b[:2], shifted, *b[3:]]}, resumed, "segments")
    fails(full, {**resumed, "first_step": 1}, "resumed at step 1")  # not from the checkpoint
    r_log = [(s, v * (1 + 1e-3), t) for s, v, t in resumed["log"]]
    fails(full, {**resumed, "log": r_log}, "resumed losses")
    flat = [(s, 8.0, t) for s, _, t in full["log"]]
    fails({**full, "log": flat}, {**resumed, "log": flat[4:]}, "did not fall")


@pytest.mark.slow
def test_smoke_runs_torchtitans_trainer_on_the_cpu(tmp_path: Path) -> None:
    pytest.importorskip("torchtitan")
    r = run_python(str(SCRIPT), "--smoke", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr[-3000:]
    if importlib.util.find_spec("triton") is None:  # import torchtitan.trainer needs triton
        assert "smoke stops after the loader" in r.stdout
        return
    (res,) = tmp_path.glob("titan_*.json")
    got = json.loads(res.read_text())
    assert got["cpu_stand_ins"] is (not torch.cuda.is_available())
    assert [s["step"] for s in got["steps"]] == list(range(1, 9))
    assert len(set(got["lengths"])) >= 2
    assert got["resume_max_rel_diff"] <= 1e-5  # the script asserted it: this proves it ran
    loss = [s["loss"] for s in got["steps"]]
    assert sum(loss[-2:]) / 2 < loss[0]


def test_a_seq_len_that_cuts_sequences_is_one_line(
    args: argparse.Namespace, tmp_path: Path
) -> None:
    pytest.importorskip("torchtitan")
    r = run_python(str(SCRIPT), "--data", str(args.data), "--seq-len", "96", "--out", str(tmp_path))
    assert r.returncode == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    assert "seq_len 96 must be a multiple of the dataset's longest sequence 64" in r.stderr
    assert not list(tmp_path.iterdir())  # nothing written
