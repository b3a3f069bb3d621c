"""The environment fails under a run (issue 22): a full disk, a name too long, an input removed.

A full disk is simulated with ``RLIMIT_FSIZE`` in the child process (every write past the limit
fails with ``EFBIG``, as ``ENOSPC`` would; ``SIGXFSZ`` ignored): what works as root, where a
read-only directory does not stop writes. torch raises ``RuntimeError``, not ``OSError``, on a
failed ``torch.save``. Each is one line, exit code 2, and the rerun without the fault succeeds.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ddecomp.cli import main
from ddecomp.data.verify import verify_dataset
from tests.training._corpus import TPS, make_dataset

from .test_outdir_faults import _big_tokens
from .test_prepare_faults import _prepare, _tokens_args, _tokens_file


def _limit_file_size(nbytes: int) -> Callable[[], None]:
    def set_limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))

    return set_limit


def _run(args: list[str], limit: int | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ddecomp", *args],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=None if limit is None else _limit_file_size(limit),
    )


def _one_line(err: str) -> str:
    assert "Traceback" not in err, err[-3000:]
    lines = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(lines) == 1, err[-3000:]
    return lines[0]


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_full_disk_during_prepare_is_one_line_and_the_rerun_resumes(
    tmp_path: Path, workers: str
) -> None:
    tok = _tokens_file(tmp_path / "t.bin", n_docs=4000)
    out = tmp_path / "out"
    args = ["prepare", *map(str, _tokens_args(tok, out)), "--quiet", "--workers", workers,
            "--shard-size", "0.1"]  # fmt: skip
    res = _run(args, limit=150_000)  # a token file of a shard is ~200 KB
    assert res.returncode == 2, res.stderr[-3000:]
    assert "write" in _one_line(res.stderr)
    res = _run(args)
    assert res.returncode == 0, res.stderr[-3000:]
    verify_dataset(out)


def test_a_full_disk_during_a_checkpoint_is_one_line(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "ds")
    run = tmp_path / "run"
    args = ["train", str(data), "--out", str(run), "--tokens", str(4 * TPS), "--tokens-per-step",
            str(TPS), "--device", "cpu", "--no-progress", "--eval-tokens", "512"]  # fmt: skip
    res = _run(args, limit=100_000)  # logs fit, the checkpoint (~1 MB) does not
    assert res.returncode == 2, res.stderr[-3000:]
    line = _one_line(res.stderr)
    assert "checkpoint" in line
    assert not list((run / "checkpoints").glob(".*.tmp"))  # no half-written temporary left


def test_a_300_character_name_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tok = _tokens_file(tmp_path / "t.bin")
    long = tmp_path / ("x" * 300)
    capsys.readouterr()
    assert _prepare(*_tokens_args(tok, long / "out")) == 2
    assert "too long" in _one_line(capsys.readouterr().err)
    assert _prepare(*_tokens_args(long, tmp_path / "out")) == 2
    assert "too long" in _one_line(capsys.readouterr().err)
    data = make_dataset(tmp_path / "ds", n_tokens=20_000)
    assert main(["train", str(data), "--out", str(long), "--device", "cpu"]) == 2
    assert "too long" in _one_line(capsys.readouterr().err)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_from_tokens_removed_during_prepare_is_one_line(tmp_path: Path, workers: str) -> None:
    tok = _big_tokens(tmp_path / "t.bin")
    out = tmp_path / "out"
    args = [*map(str, _tokens_args(tok, out)), "--quiet", "--workers", workers, "--shard-size", "1"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "ddecomp", "prepare", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        end = time.monotonic() + 60
        while not (out / ".prepare.json").exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < end
            time.sleep(0.002)
        os.kill(proc.pid, signal.SIGSTOP)
        tok.unlink()
        os.kill(proc.pid, signal.SIGCONT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 2, err[-3000:]
    assert str(tok) in _one_line(err)
    assert not (out / "manifest.json").exists()
