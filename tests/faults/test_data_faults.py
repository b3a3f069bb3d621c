"""A prepared dataset damaged or edited where its checks did not look (issue 22).

Every byte of an ``.npy`` header flipped in turn: ``stats`` and ``train`` say which file, in one
line (numpy's header parser raised ``tokenize.TokenError`` for some). A manifest whose
``tokenizer.vocab_size`` was lowered below the ids the data holds: ``train`` refuses at the first
step that holds such an id, in one line, instead of an ``IndexError`` from the embedding.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ddecomp.cli import main

from .test_prepare_faults import _prepare, _tokens_args, _tokens_file


def _errors(capsys: pytest.CaptureFixture[str]) -> list[str]:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return [ln for ln in err.splitlines() if ln.startswith("ddecomp ")]


def test_every_flipped_npy_header_byte_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tok = _tokens_file(tmp_path / "t.bin")
    out = tmp_path / "out"
    assert _prepare(*_tokens_args(tok, out)) == 0
    npy = sorted((out / "shards").glob("*.train.L*.npy"))[0]
    good = npy.read_bytes()
    header_end = 10 + int.from_bytes(good[8:10], "little")
    refused = 0
    for i in range(header_end):
        for bit in (0x01, 0x20):
            bad = bytearray(good)
            bad[i] ^= bit
            npy.write_bytes(bytes(bad))
            capsys.readouterr()
            code = main(["stats", str(out), "--json"])
            if code:
                lines = _errors(capsys)
                assert len(lines) == 1, lines
                assert npy.name in lines[0] or "manifest" in lines[0], lines[0]
                refused += 1
    assert refused > header_end  # vacuity guard: most flips are refused (some are harmless)
    npy.write_bytes(good)


def test_a_lowered_vocab_size_is_refused_in_one_line_by_train(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tok = _tokens_file(tmp_path / "t.bin")  # ids 1..999, EOS 0
    out = tmp_path / "out"
    assert _prepare(*_tokens_args(tok, out), "--max-len", "64") == 0
    man = json.loads((out / "manifest.json").read_text())
    assert man["tokenizer"]["vocab_size"] == 1000
    man["tokenizer"]["vocab_size"] = 500
    (out / "manifest.json").write_text(json.dumps(man))
    capsys.readouterr()
    code = main(["train", str(out), "--out", str(tmp_path / "run"), "--tokens", "2048",
                 "--tokens-per-step", "512", "--device", "cpu", "--no-progress"])  # fmt: skip
    assert code == 2
    lines = [ln for ln in _errors(capsys) if "error:" in ln]
    assert len(lines) == 1, lines
    assert "500" in lines[0]
    assert "vocab" in lines[0]
