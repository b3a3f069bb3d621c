"""Checkpoints and run logs under attack or damage: refused with one line, never run, never trusted.

Each test builds damage a real run meets (a pickle that runs code, a ``latest.json`` that points
elsewhere, flipped bytes on disk, a killed writer's partial line, an output directory that cannot
be written) and checks what ``ddecomp train --resume`` does with it through the CLI: one line on
stderr, the documented exit code, and nothing executed or loaded from outside the run.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from ddecomp.cli import main
from ddecomp.errors import UserError
from ddecomp.io import sha256_file
from ddecomp.training.loop import train
from ddecomp.training.runlog import load_jsonl
from tests.training._corpus import TPS, cfg_for, make_dataset

STOP = 2  # the base run stops (with a checkpoint) after this step
CKPT = f"step_{STOP:07d}.pt"


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("faults") / "ds")


@pytest.fixture(scope="module")
def base_run(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("base") / "run"
    train(cfg_for(data, run, stop_after=STOP))
    assert (run / "checkpoints" / CKPT).is_file()  # vacuity guard: there is something to resume
    return run


@pytest.fixture
def run(base_run: Path, tmp_path: Path) -> Path:
    """A private copy of the stopped run, free to damage."""
    dst = tmp_path / "run"
    shutil.copytree(base_run, dst)
    return dst


def resume(data: Path, run: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """``ddecomp train --resume`` with the base run's settings; its exit code and stderr."""
    capsys.readouterr()
    code = main(
        ["train", str(data), "--out", str(run), "--tokens", str(16 * TPS),
         "--tokens-per-step", str(TPS), "--warmup", "3", "--device", "cpu",
         "--eval-tokens", "512", "--deterministic", "--no-progress", "--resume"]
    )  # fmt: skip
    return code, capsys.readouterr().err.strip()


def one_line(err: str) -> str:
    assert err, "no error message"
    assert "\n" not in err, err
    assert "Traceback" not in err
    return err


def point_latest(run: Path, path: str, file: Path | None = None) -> None:
    """Make ``latest.json`` name ``path``, with the size and sha256 of ``file`` (default: it)."""
    f = file or run / "checkpoints" / path
    rec = {"step": STOP, "path": path, "bytes": f.stat().st_size, "sha256": sha256_file(f)}
    (run / "checkpoints" / "latest.json").write_text(json.dumps(rec))


class _Evil:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("how", ["torch.save", "pickle.dump"])
def test_a_pickle_that_runs_code_is_refused_unrun(
    data: Path, run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], how: str
) -> None:
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(_Evil(probe)))  # vacuity guard: the payload runs
    assert probe.exists()
    marker = tmp_path / "pwned"
    ckpt = run / "checkpoints" / CKPT
    evil = {"model": _Evil(marker)}
    if how == "torch.save":
        torch.save(evil, ckpt)
    else:
        with open(ckpt, "wb") as f:
            pickle.dump(evil, f)
    point_latest(run, CKPT)  # its record matches: only the loader itself can refuse it
    code, err = resume(data, run, capsys)
    assert not marker.exists(), "the checkpoint ran code"
    assert code == 2
    assert CKPT in one_line(err)


@pytest.mark.parametrize("where", ["dotdot", "absolute", "symlink"])
def test_latest_json_cannot_leave_the_checkpoint_dir(
    data: Path, run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    outside = tmp_path / "x.pt"  # a valid checkpoint of this very run: loading it would work
    shutil.copy(run / "checkpoints" / CKPT, outside)
    if where == "dotdot":
        point_latest(run, "../../x.pt", outside)
    elif where == "absolute":
        point_latest(run, str(outside), outside)
    else:
        (run / "checkpoints" / "step_0000009.pt").symlink_to(outside)
        point_latest(run, "step_0000009.pt", outside)
    code, err = resume(data, run, capsys)
    assert code == 2
    assert "latest.json" in one_line(err)
    assert not (run / "metrics.jsonl").read_text().count('"step": 3'), "it resumed"


def _tensor_data_offset(path: Path) -> tuple[int, int]:
    """Offset and size of the largest stored (uncompressed) entry of a torch zip checkpoint."""
    with zipfile.ZipFile(path) as z:
        info = max(z.infolist(), key=lambda i: i.file_size)
    assert info.compress_type == zipfile.ZIP_STORED
    assert info.file_size >= 1024  # a tensor's bytes, not a small record
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        head = f.read(30)
    name_len = int.from_bytes(head[26:28], "little")  # the local file header's fixed 30 bytes
    extra_len = int.from_bytes(head[28:30], "little")
    return info.header_offset + 30 + name_len + extra_len, info.file_size


def test_flipped_bytes_in_a_checkpoint_are_detected(
    data: Path, run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = run / "checkpoints" / CKPT
    start, size = _tensor_data_offset(ckpt)
    raw = bytearray(ckpt.read_bytes())
    at = start + size // 2
    raw[at : at + 64] = bytes(b ^ 0xFF for b in raw[at : at + 64])
    ckpt.write_bytes(bytes(raw))
    code, err = resume(data, run, capsys)
    assert code == 1
    assert CKPT in one_line(err)
    assert "sha256" in err


@pytest.mark.parametrize(
    "latest",
    [
        "{not json",
        "",
        "[1, 2]",
        '{"step": 2}',
        '{"step": 2, "path": 7}',
        '{"step": 2, "path": "step_0000009.pt", "bytes": 1, "sha256": "00"}',  # missing file
        '{"step": 2, "path": "step_0000002.pt"}',  # no integrity record
        '{"step": 2, "path": "step_0000002.pt", "bytes": "x", "sha256": 5}',
    ],
)
def test_an_unreadable_latest_json_is_one_line(
    data: Path, run: Path, capsys: pytest.CaptureFixture[str], latest: str
) -> None:
    (run / "checkpoints" / "latest.json").write_text(latest)
    code, err = resume(data, run, capsys)
    assert code == 2
    assert "latest.json" in one_line(err)


@pytest.mark.parametrize("damage", ["truncated", "not a dict", "missing keys", "directory"])
def test_an_unreadable_checkpoint_is_one_line(
    data: Path, run: Path, capsys: pytest.CaptureFixture[str], damage: str
) -> None:
    ckpt = run / "checkpoints" / CKPT
    if damage == "truncated":
        ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    elif damage == "not a dict":
        torch.save([torch.zeros(3)], ckpt)
    elif damage == "missing keys":
        torch.save({"model": {"w": torch.zeros(3)}}, ckpt)
    else:
        ckpt.unlink()
        ckpt.mkdir()
        (ckpt / "f").write_text("x")
    if damage != "directory":
        point_latest(run, CKPT)  # the record matches: the content itself is what is wrong
    code, err = resume(data, run, capsys)
    assert code == 2
    assert CKPT in one_line(err)


def test_a_partial_last_log_line_is_dropped_on_resume(data: Path, run: Path) -> None:
    """A killed writer leaves half a line; resume drops it and continues every step once."""
    before = load_jsonl(run / "metrics.jsonl")
    assert [r["step"] for r in before] == list(range(1, STOP + 1))
    with open(run / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write('{"step": 3, "seq_len": 12')
    with open(run / "eval.jsonl", "a", encoding="utf-8") as f:
        f.write('{"step": 3, "val_lo')
    cfg = cfg_for(data, run)
    train(replace(cfg, resume=True))
    after = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in after] == list(range(1, 17))
    assert after[:STOP] == before  # the steps before the checkpoint are kept as they were
    evals = [json.loads(x) for x in (run / "eval.jsonl").read_text().splitlines()]
    assert [e["step"] for e in evals] == [16]


def test_load_jsonl_drops_only_a_partial_last_line(tmp_path: Path) -> None:
    p = tmp_path / "metrics.jsonl"
    p.write_text('{"step": 1}\n{"step": 2}\n{"step": 3, "lo')
    assert load_jsonl(p) == [{"step": 1}, {"step": 2}]
    p.write_text('{"step": 1}\n{"ste\n{"step": 3}\n')  # damage inside: not a killed writer
    with pytest.raises(UserError, match=r"metrics\.jsonl:2"):
        load_jsonl(p)


def _unwritable_out(tmp_path: Path, how: str) -> Path:
    if how == "under a file":
        (tmp_path / "file").write_text("x")
        return tmp_path / "file" / "run"
    if os.geteuid() == 0:
        pytest.skip("root writes into a read-only directory; 'under a file' covers the path")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    return ro / "run"


@pytest.mark.parametrize("how", ["under a file", "read-only dir"])
def test_an_unwritable_out_is_one_line(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], how: str
) -> None:
    out = _unwritable_out(tmp_path, how)
    capsys.readouterr()
    code = main(
        ["train", str(data), "--out", str(out), "--tokens", str(4 * TPS), "--tokens-per-step",
         str(TPS), "--warmup", "1", "--device", "cpu", "--no-progress"]
    )  # fmt: skip
    assert code == 2
    assert str(out) in one_line(capsys.readouterr().err.strip())
