"""Numbers and arguments a user can get wrong (issue 22), through ``ddecomp.cli.main``.

Each is refused at parse or config time with one line and exit code 2 (never a traceback, never a
run that trains until its loss is NaN): budgets that cannot be planned in memory, seeds outside
numpy's range, infinite or NaN optimizer settings.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ddecomp.cli import main
from tests.training._corpus import TPS, make_dataset


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("clifaults") / "ds")


def one_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(lines) == 1, err
    return lines[0]


# ---- 17: numbers that cannot be right ---------------------------------------------------------
HUGE = str(10**21)  # 1e21 tokens: 1e18 steps, exabytes of plan
BIG = str(4 * 10**12)  # 4e12 tokens of 1,024 per step: a 29 GiB plan array


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--seed", "-1"], "--seed"),
        (["--seed", str(1 << 64)], "--seed"),
        (["--lr", "inf"], "--lr"),
        (["--lr", "nan"], "--lr"),
        (["--grad-clip", "nan"], "--grad-clip"),
        (["--grad-clip", "inf"], "--grad-clip"),
        (["--weight-decay", "inf"], "--weight-decay"),
        (["--tokens", HUGE], "--tokens"),
        (["--tokens", BIG], "--tokens"),
    ],
)
def test_train_refuses_numbers_that_cannot_be_right(
    data: Path, tmp_path: Path, args: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    cmd = ["train", str(data), "--out", str(run), "--tokens-per-step", str(TPS), "--device", "cpu",
           "--no-progress", "--stop-after", "1", *args]  # fmt: skip
    assert main(cmd) == 2
    assert named in one_error(capsys)
    assert not run.exists()  # refused before anything is written


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--seed", "-1"], "--seed"),
        (["--epoch", "-1"], "--epoch"),
        (["--tokens", HUGE], "--tokens"),
        (["--tokens", BIG], "--tokens"),
    ],
)
def test_plan_refuses_numbers_that_cannot_be_right(
    data: Path, args: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["plan", str(data), "--tokens-per-step", str(TPS), *args]) == 2
    assert named in one_error(capsys)


# ---- 21: a mistyped --tokenizer is found before anything is written ----------------------------
@pytest.mark.parametrize("spec", ["./tok/tokenizer.json", "tokenizer.json", "/no/such/dir/"])
def test_a_missing_tokenizer_file_is_no_such_file_and_writes_nothing(
    tmp_path: Path, spec: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    doc = tmp_path / "doc.txt"
    doc.write_text("hello world, a document of a few words. " * 200)
    out = tmp_path / "out"
    common = ["prepare", str(doc), "--out", str(out), "--quiet", "--min-len", "16"]
    assert main([*common, "--tokenizer", spec]) == 2
    line = one_error(capsys)
    assert "no such file" in line
    assert "the hub said" not in line
    assert not out.exists()  # nothing written: the corrected command is not "another dataset"
    assert main([*common, "--vocab-size", "300"]) == 0


# ---- 23-26: the newcomer's rough edges -------------------------------------------------------
def test_stats_checks_its_plot_path_before_printing(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert main(["stats", str(data), "--plot", str(tmp_path / "no" / "dir" / "x.png")]) == 2
    out = capsys.readouterr()
    assert out.out == ""  # no report first
    assert "no" in out.err
    assert "Traceback" not in out.err


def test_stats_of_the_manifest_file_says_pass_the_directory(
    data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert main(["stats", str(data / "manifest.json")]) == 2
    line = one_error(capsys)
    assert "is a file" in line
    assert str(data) in line


def test_an_unknown_option_shows_the_subcommands_usage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["stats", "DIR", "--bogus"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "usage: ddecomp stats" in err
    assert "--bogus" in err


def test_stats_of_a_missing_split_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ds = make_dataset(tmp_path / "ds", n_tokens=20_000, val_fraction=0.0)
    capsys.readouterr()
    assert main(["stats", str(ds), "--split", "val"]) == 2
    line = one_error(capsys)
    assert "no val" in line
    assert "--val-fraction" in line


# ---- 27: plan's durations and --measure's progress -------------------------------------------
def test_plan_states_a_small_runs_time_in_seconds_and_measure_reports_progress(
    data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert main(["plan", str(data), "--tokens-per-step", str(TPS), "--tokens", str(8 * TPS)]) == 0
    out = capsys.readouterr().out
    assert "predicted time at that fit" in out  # vacuity guard
    assert "0.00 h" not in out
    args = ["plan", str(data), "--tokens-per-step", str(TPS), "--measure", "tiny", "--iters", "1",
            "--device", "cpu"]  # fmt: skip
    assert main(args) == 0
    err = capsys.readouterr().err
    measured = [ln for ln in err.splitlines() if "measuring" in ln]
    assert len(measured) >= 2, err  # one line per length, as it goes
