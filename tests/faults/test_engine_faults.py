"""Engines under attack (issue 22): a wrong Ray address, Ctrl-C in a multi-worker prepare.

``--engine ray --ray-address`` of a port where no cluster listens fails within seconds, in one
line, before the tokenizer is trained or anything is written (it retried for minutes). Ctrl-C
(SIGINT to the process group, as a terminal sends) at several points of a multi-worker prepare
ends it within seconds, with one line and no worker traceback, and the rerun resumes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ddecomp.data.layout import MANIFEST
from ddecomp.data.verify import verify_dataset
from tests._fixtures import free_port

from .test_outdir_faults import _big_tokens
from .test_prepare_faults import _tokens_args


def test_a_wrong_ray_address_fails_in_seconds_before_any_work(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    doc = tmp_path / "doc.txt"
    doc.write_text("a few words of text. " * 500)
    out = tmp_path / "out"
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    cmd = [sys.executable, "-m", "ddecomp", "prepare", str(doc), "--out", str(out), "--quiet",
           "--engine", "ray", "--ray-address", f"127.0.0.1:{free_port()}"]  # fmt: skip
    t = time.monotonic()
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    took = time.monotonic() - t
    assert res.returncode == 2, res.stderr[-2000:]
    assert "Traceback" not in res.stderr
    lines = [ln for ln in res.stderr.splitlines() if "error:" in ln]
    assert len(lines) == 1, res.stderr[-2000:]
    assert "--ray-address" in lines[0]
    assert took < 60, took  # bound, not a benchmark: it retried for more than 5 minutes
    assert not out.exists()  # no tokenizer trained, no .prepare.json


def _done(out: Path) -> int:
    return len(list((out / "shards").glob("*.done.json"))) if (out / "shards").is_dir() else 0


@pytest.mark.slow
def test_ctrl_c_in_a_multi_worker_prepare_ends_in_one_line_and_resumes(tmp_path: Path) -> None:
    # 24M tokens: a resumed run takes about 0.4 s here, so the short delays interrupt it
    tok = _big_tokens(tmp_path / "t.bin", n=24_000_000)
    out = tmp_path / "out"
    args = [*map(str, _tokens_args(tok, out)), "--quiet", "--workers", "2", "--shard-size", "0.3"]
    interrupted = 0
    for delay in (0.0, 0.1, 0.3, 0.6, 1.0):
        before = _done(out)
        proc = subprocess.Popen(
            [sys.executable, "-m", "ddecomp", "prepare", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its own process group, as a terminal's foreground job
        )
        try:
            end = time.monotonic() + 60
            while _done(out) <= before and proc.poll() is None:  # a shard written in this run
                assert time.monotonic() < end
                time.sleep(0.002)
            time.sleep(delay)
            with contextlib.suppress(ProcessLookupError):  # it may have just finished
                os.killpg(proc.pid, signal.SIGINT)
            _, err = proc.communicate(timeout=30)  # a hang fails here
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()
        if proc.returncode == 0 or (
            proc.returncode == -signal.SIGINT and "prepared " in err and (out / MANIFEST).exists()
        ):  # it finished before the signal, or as it arrived while the interpreter exited
            break
        assert proc.returncode == 130, err[-3000:]
        assert "Traceback" not in err, err[-3000:]
        assert "Error" not in err, err[-3000:]
        last = [ln for ln in err.splitlines() if not ln.startswith("ddecomp: ")]  # not progress
        assert len(last) == 1, err[-3000:]
        assert "interrupted" in last[0]
        interrupted += 1
    assert interrupted >= 2  # vacuity guard: it was interrupted mid-run
    res = subprocess.run(
        [sys.executable, "-m", "ddecomp", "prepare", *args], capture_output=True, timeout=300
    )
    assert res.returncode == 0, res.stderr[-3000:]
    verify_dataset(out)
