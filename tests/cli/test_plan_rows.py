"""``ddecomp plan --rows``: a run of a trillion tokens planned from bucket counts, no data."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ddecomp.cli import main

ROWS = "256=507812500,512=273437500,1024=146484375,2048=78125000,4096=41503906,8192=30517578"


def test_a_trillion_token_run_plans_from_row_counts(capsys: Any) -> None:
    argv = ["plan", "--rows", ROWS, "--tokens-per-step", "4194304", "--tokens", str(10**12)]
    assert main([*argv, "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["steps"] == 10**12 // 4194304 == 238_418
    assert s["dataset"] == "--rows"
    assert [b["length"] for b in s["buckets"]] == [256, 512, 1024, 2048, 4096, 8192]
    assert sum(b["steps"] for b in s["buckets"]) == s["steps"]
    assert main(argv) == 0
    assert "238,418 steps" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "msg"),
    [
        (["--rows", "256=x"], "is not LENGTH=ROWS"),
        (["--rows", "300=5"], "is not LENGTH=ROWS"),
        (["--rows", "256=5,256=6"], "is not LENGTH=ROWS"),
        (["--rows", "256=-1"], "is not LENGTH=ROWS"),
        (["somedir", "--rows", "256=5"], "either DIR or --rows"),
        ([], "give a prepared dataset DIR"),
        (["--rows", "256=5", "--measure", "160m"], "--measure needs a local dataset"),
    ],
)
def test_bad_row_counts_are_one_line(extra: list[str], msg: str, capsys: Any) -> None:
    code: Any
    try:
        code = main(["plan", *extra, "--tokens-per-step", "8192"])
    except SystemExit as e:  # argparse's own usage error
        code = e.code
    assert code == 2
    err = capsys.readouterr().err
    assert msg in err
    assert "Traceback" not in err
