"""``ddecomp prepare --tails pack`` from the command line: options, summary, stats, verify."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ddecomp.cli import main
from ddecomp.data.layout import MANIFEST
from tests._fixtures import random_lengths


def _tokens(tmp: Path) -> Path:
    lengths = random_lengths(300, seed=8, hi=600)
    rng = np.random.default_rng(0)
    toks = rng.integers(1, 500, int(lengths.sum())).astype(np.uint16)
    toks[np.cumsum(lengths) - 1] = 0
    path = tmp / "t.bin"
    toks.tofile(path)
    return path


def test_pack_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ds"
    args = ["prepare", "--from-tokens", str(_tokens(tmp_path)), "--eos-id", "0", "--out",
            str(out), "--min-len", "64", "--max-len", "256", "--tails", "pack", "--tail-len",
            "32", "--quiet"]  # fmt: skip
    assert main(args) == 0
    assert "tail rows of 32" in capsys.readouterr().out
    man = json.loads((out / MANIFEST).read_text())
    assert man["tails"] == {"policy": "pack", "length": 32}
    assert main(["verify", str(out)]) == 0
    capsys.readouterr()
    assert main(["stats", str(out), "--json", "--plot", str(tmp_path / "s.png")]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["tail"]["L"] == 32
    assert st["kept_targets"] == man["splits"]["train"]["targets"]
    assert (tmp_path / "s.png").stat().st_size > 10_000


@pytest.mark.parametrize(
    ("extra", "needle"),
    [(["--tails", "pack", "--tail-len", "128"], "above --min-len"),
     (["--tail-len", "32"], "needs --tails pack"),
     (["--tails", "pack", "--tail-len", "48"], "power of two")],
)  # fmt: skip
def test_bad_tail_options_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], needle: str
) -> None:
    args = ["prepare", "--from-tokens", str(_tokens(tmp_path)), "--eos-id", "0", "--out",
            str(tmp_path / "ds"), "--min-len", "64", *extra]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    assert needle in err
    assert "Traceback" not in err
    assert not (tmp_path / "ds" / MANIFEST).exists()
