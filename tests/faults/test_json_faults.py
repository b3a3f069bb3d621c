"""100,000-deep JSON wherever ddecomp reads JSON (issue 22): one line, never a RecursionError.

``.prepare.json`` and ``manifest.json`` of a dataset, a shard's ``done.json`` (a damaged record:
the shard is redone), a run's ``latest.json``, ``metrics.jsonl``, ``config.json`` and
``summary.json``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ddecomp.cli import main
from ddecomp.data.verify import verify_dataset
from tests.training._corpus import TPS, make_dataset

from .test_prepare_faults import _prepare, _tokens_args, _tokens_file

DEEP = "[" * 100_000 + "]" * 100_000
BASE = ["--tokens", str(8 * TPS), "--tokens-per-step", str(TPS), "--warmup", "3", "--device",
        "cpu", "--eval-tokens", "512", "--no-progress"]  # fmt: skip


def one_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert err, "no message"
    assert "Traceback" not in err
    assert "Recursion" not in err
    lines = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture(scope="module")
def stopped(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("jsonfaults")
    data = make_dataset(root / "ds")
    run = root / "run"
    assert main(["train", str(data), "--out", str(run), *BASE, "--stop-after", "2"]) == 0
    return data, run


def test_a_deep_prepare_json_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tok = _tokens_file(tmp_path / "t.bin")
    out = tmp_path / "out"
    assert _prepare(*_tokens_args(tok, out)) == 0
    (out / ".prepare.json").write_text(DEEP)
    capsys.readouterr()
    assert _prepare(*_tokens_args(tok, out)) == 2
    assert ".prepare.json" in one_line(capsys)


def test_a_deep_manifest_is_one_line_and_rewritten_by_the_rerun(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tok = _tokens_file(tmp_path / "t.bin")
    out = tmp_path / "out"
    assert _prepare(*_tokens_args(tok, out)) == 0
    (out / "manifest.json").write_text(DEEP)
    capsys.readouterr()
    assert main(["stats", str(out)]) == 2
    assert "manifest.json" in one_line(capsys)
    assert _prepare(*_tokens_args(tok, out)) == 0  # the shards are kept, the manifest rewritten
    verify_dataset(out)


def test_a_deep_done_json_is_a_damaged_record_redone(tmp_path: Path) -> None:
    tok = _tokens_file(tmp_path / "t.bin")
    out = tmp_path / "out"
    assert _prepare(*_tokens_args(tok, out)) == 0
    (out / "manifest.json").unlink()  # an interrupted run
    (out / "shards" / "00000.done.json").write_text(DEEP)
    assert _prepare(*_tokens_args(tok, out)) == 0
    verify_dataset(out)


@pytest.mark.parametrize("name", ["checkpoints/latest.json", "metrics.jsonl"])
def test_deep_json_in_a_run_is_one_line_on_resume(
    stopped: tuple[Path, Path], tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    data, base = stopped
    run = tmp_path / "run"
    shutil.copytree(base, run)
    text = DEEP if name.endswith(".json") else DEEP + "\n" + (run / name).read_text()
    (run / name).write_text(text)
    capsys.readouterr()
    assert main(["train", str(data), "--out", str(run), *BASE, "--resume"]) == 2
    assert Path(name).name in one_line(capsys)


@pytest.mark.parametrize("name", ["metrics.jsonl", "config.json", "summary.json"])
def test_deep_json_in_a_run_is_one_line_in_compare(
    stopped: tuple[Path, Path], tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _, base = stopped
    run = tmp_path / "run"
    shutil.copytree(base, run)
    (run / name).write_text(DEEP + "\n")
    capsys.readouterr()
    assert main(["compare", str(run)]) == 2
    assert name in one_line(capsys)
