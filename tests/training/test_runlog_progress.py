"""What a training run tells its user while it runs (issue 12 items 3 and 4): a missing
validation split at the start, plain progress lines off a terminal, a resume said as such."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ddecomp.training.loop import train
from tests.training._corpus import cfg_for, make_dataset


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("progress") / "ds")


def test_a_run_without_validation_says_so_at_the_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    no_val = make_dataset(tmp_path / "noval", n_tokens=60_000, val_fraction=0.0)
    # Stopped after one step of 16: the old warning came only after a finished run.
    s = train(cfg_for(no_val, tmp_path / "run", stop_after=1))
    assert not s["finished"]
    err = capsys.readouterr().err
    assert "will not be evaluated" in err
    assert "--val-fraction 0.02" in err
    assert "will not be evaluated" in s["eval_skipped"]


def test_progress_off_a_terminal_is_plain_lines(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train(cfg_for(data, tmp_path / "run", progress=True, eval_every=8))
    err = capsys.readouterr().err  # captured: not a terminal, as a log file is not
    train(cfg_for(data, tmp_path / "quiet", progress=False))
    assert "dd: step 16/16, loss " in capsys.readouterr().err  # --no-progress: lines, no bar
    assert "\r" not in err
    lines = [x for x in err.splitlines() if x.startswith("dd: step ")]
    assert lines  # vacuity guard: progress was written at all
    assert lines[-1].startswith("dd: step 16/16, loss ")
    assert len(lines) <= 16
    assert "ddecomp train: step 8: val loss" in err


def test_a_resumed_run_says_where_it_resumes(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    train(cfg_for(data, run, stop_after=5))
    capsys.readouterr()
    train(cfg_for(data, run, resume=True, progress=True))
    err = capsys.readouterr().err
    assert f"resuming {run} at step 5 of 16" in err
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 17))
