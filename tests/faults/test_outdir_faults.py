"""An output directory under attack (issue 22): symlinks, leftovers, two writers at once.

``prepare --overwrite`` never deletes through a symlinked ``shards/`` (another dataset's files
survive) and removes every file it wrote, ``--tails pack``'s tail files included; one directory
has one writer: a second ``prepare`` into a directory a running one holds is refused in one line,
and a lock left by a killed run does not block the rerun.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ddecomp.cli import main
from ddecomp.data.verify import verify_dataset

from .test_prepare_faults import _error_line, _prepare, _tokens_args, _tokens_file


def _files(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


# ---- 2: never delete through a symlinked shards/ -----------------------------------------------
def test_overwrite_never_deletes_through_a_symlinked_shards_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tok = _tokens_file(tmp_path / "t.bin")
    other, out = tmp_path / "other", tmp_path / "out"
    assert _prepare(*_tokens_args(tok, other)) == 0
    assert _prepare(*_tokens_args(tok, out)) == 0
    before = _files(other / "shards")
    assert len(before) >= 4  # vacuity guard: there are files to lose
    for p in (out / "shards").iterdir():
        p.unlink()
    (out / "shards").rmdir()
    (out / "shards").symlink_to(other / "shards")
    capsys.readouterr()
    assert _prepare(*_tokens_args(tok, out), "--max-len", "128", "--overwrite") == 2
    line = _error_line(capsys)
    assert "symlink" in line
    assert "shards" in line
    assert _files(other / "shards") == before
    verify_dataset(other)
    # Without --overwrite too: a resumed run would write its shards into the other dataset.
    assert _prepare(*_tokens_args(tok, out)) == 2
    assert "symlink" in _error_line(capsys)
    assert _files(other / "shards") == before


# ---- 19: --overwrite removes --tails pack's tail files ----------------------------------------
def test_overwrite_removes_the_tail_files_of_a_packed_dataset(tmp_path: Path) -> None:
    tok = _tokens_file(tmp_path / "t.bin")
    out = tmp_path / "out"
    assert _prepare(*_tokens_args(tok, out), "--tails", "pack") == 0
    tails = sorted(p.name for p in (out / "shards").glob("*.tail.*.npy"))
    assert tails  # vacuity guard
    (out / "shards" / "notes.tail.starts.npy").write_bytes(b"mine")  # not a name ddecomp writes
    assert _prepare(*_tokens_args(tok, out), "--overwrite") == 0  # --tails drop
    left = sorted(p.name for p in (out / "shards").glob("*.tail.*.npy"))
    assert left == ["notes.tail.starts.npy"]
    verify_dataset(out)


# ---- 7: one writer per directory ---------------------------------------------------------------
def _big_tokens(path: Path, n: int = 12_000_000) -> Path:
    rng = np.random.default_rng(0)
    arr = rng.integers(1, 1000, n, dtype=np.uint16)
    arr[rng.integers(0, n, n // 300)] = 0  # EOS about every 300 tokens
    arr[-1] = 0
    arr.tofile(path)
    return path


def _start_prepare(tok: Path, out: Path, *extra: str) -> subprocess.Popen[str]:
    args = [str(a) for a in _tokens_args(tok, out)]
    return subprocess.Popen(
        [sys.executable, "-m", "ddecomp", "prepare", *args, "--quiet", "--workers", "1", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(path: Path, proc: subprocess.Popen[str], timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < end, f"{path} never appeared"
        time.sleep(0.002)


def test_a_second_prepare_into_a_running_ones_directory_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tok = _big_tokens(tmp_path / "t.bin")
    out = tmp_path / "out"
    first = _start_prepare(tok, out, "--shard-size", "1")
    try:
        _wait_for(out / ".prepare.json", first)
        os.kill(first.pid, signal.SIGSTOP)  # hold it mid-run, the lock held
        capsys.readouterr()
        for extra in ([], ["--overwrite"], ["--overwrite", "--max-len", "128"]):
            assert _prepare(*_tokens_args(tok, out), "--shard-size", "1", *extra) == 2
            line = _error_line(capsys)
            assert "another" in line
            assert f"{out} " in line
            assert f"pid {first.pid}" in line
    finally:
        os.kill(first.pid, signal.SIGCONT)
    _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    verify_dataset(out)
    assert not (out / ".ddecomp.lock").exists()  # released and removed at the end


def test_a_lock_left_by_a_killed_prepare_does_not_block_the_rerun(tmp_path: Path) -> None:
    tok = _big_tokens(tmp_path / "t.bin")
    out = tmp_path / "out"
    first = _start_prepare(tok, out, "--shard-size", "1")
    _wait_for(out / ".prepare.json", first)
    os.kill(first.pid, signal.SIGKILL)
    first.communicate(timeout=30)
    assert (out / ".ddecomp.lock").exists()  # vacuity guard: the killed run left its lock file
    assert main(["prepare", *map(str, _tokens_args(tok, out)), "--quiet", "--shard-size", "1"]) == 0
    verify_dataset(out)
