"""The prepare / stats CLI as a user meets it: text inputs, bad input, exit codes, errors."""

from __future__ import annotations

import gzip
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from ddecomp import open_dataset
from ddecomp.cli import main
from ddecomp.data.layout import MANIFEST
from tests._fixtures import run_python


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return run_python("-m", "ddecomp", *args)


def _corpus(tmp_path: Path) -> Path:
    d = tmp_path / "in"
    d.mkdir()
    rng = np.random.default_rng(0)
    words = ["the", "cat", "sat", "on", "a", "mat", "while", "dogs", "ran", "home", "ünïcode"]
    docs = [" ".join(rng.choice(words, int(rng.integers(5, 900)))) for _ in range(120)]
    lines = [json.dumps({"text": t}) for t in docs[:60]]
    lines[3] = "{not json"
    lines[7] = json.dumps({"body": "no text field"})
    lines[9] = json.dumps({"text": "   "})
    (d / "a.jsonl").write_text("\n".join(lines) + "\n")
    with gzip.open(d / "b.jsonl.gz", "wt") as f:
        f.write("".join(json.dumps({"text": t}) + "\n" for t in docs[60:100]))
    for i, t in enumerate(docs[100:]):
        (d / f"doc{i:02d}.md").write_text(t)
    (d / "bad.txt").write_bytes(b"caf\xe9 latin-1 bytes")
    return d


def test_text_prepare_counts_every_skip_and_keeps_documents(tmp_path: Path) -> None:
    src = _corpus(tmp_path)
    out = tmp_path / "ds"
    r = cli("prepare", str(src), "--out", str(out), "--vocab-size", "300", "--min-len", "8",
            "--max-len", "256", "--workers", "2", "--quiet")  # fmt: skip
    assert r.returncode == 0, r.stderr
    man = json.loads((out / MANIFEST).read_text())
    skipped = man["dropped"]["ingest"]["skipped"]
    assert skipped["invalid_json"] == 1
    assert skipped["missing_field"] == 1
    assert skipped["empty_document"] == 1
    assert skipped["invalid_utf8"] == 1
    assert man["totals"]["documents"] == 120 - 3
    assert "a.jsonl:4" in r.stderr  # file and line of the malformed record
    assert man["tokenizer"]["eos_token"] == "<|endoftext|>"
    assert (out / "tokenizer.json").is_file()
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    first = next(open_dataset(out).documents())
    assert first[-1] == man["tokenizer"]["eos_id"]
    assert (
        tok.decode(first[:-1].tolist())
        == json.loads((src / "a.jsonl").read_text().split("\n")[0])["text"]
    )
    assert cli("verify", str(out)).returncode == 0
    st = cli("stats", str(out), "--json", "--plot", str(tmp_path / "s.png"))
    assert st.returncode == 0
    assert (tmp_path / "s.png").stat().st_size > 10_000
    assert json.loads(st.stdout)["buckets"]


TOKENS = ["prepare", "--from-tokens", "{tok}", "--eos-id", "0", "--out", "{out}"]
TEXT = ["prepare", "{src}/a.jsonl", "--out", "{out}"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["prepare", "{missing}", "--out", "{out}"], "does not exist"),
        ([*TEXT, "--strict", "--vocab-size", "300"], "a.jsonl:4"),
        (["prepare", "--from-tokens", "{tok}", "--out", "{out}"], "--eos-id"),
        ([*TOKENS, "--min-len", "100"], "power of two"),
        ([*TOKENS, "--min-len", "512", "--max-len", "256"], "larger than"),
        (["prepare", "--from-tokens", "{odd}", "--eos-id", "0", "--out", "{out}"], "whole number"),
        ([*TEXT, "--tokenizer", "{missing}"], "no such file"),
        (["stats", "{missing}"], "not a prepared"),
    ],
)  # fmt: skip
def test_user_errors_are_one_line_exit_2_and_write_nothing(tmp_path: Path, args, needle) -> None:
    src = _corpus(tmp_path)
    tok = tmp_path / "t.bin"
    np.arange(1000, dtype=np.uint16).tofile(tok)
    odd = tmp_path / "odd.bin"
    odd.write_bytes(b"abc")
    subs = {
        "src": src,
        "out": tmp_path / "out",
        "missing": tmp_path / "missing",
        "tok": tok,
        "odd": odd,
    }
    r = cli(*[a.format(**subs) for a in args])
    assert r.returncode == 2, r.stderr
    errors = [ln for ln in r.stderr.splitlines() if "error:" in ln]
    assert len(errors) == 1, r.stderr
    assert needle in errors[0], r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "out" / MANIFEST).exists()


def test_empty_corpus_is_an_error_and_nothing_is_written(tmp_path: Path, capsys) -> None:
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.jsonl").write_text('{"text": ""}\n{"text": "  "}\n')
    out = tmp_path / "out"
    assert main(["prepare", str(src), "--out", str(out), "--quiet"]) == 2
    assert "no documents" in capsys.readouterr().err
    assert not out.exists()


def test_interrupted_dataset_gives_a_hint(tmp_path: Path, capsys) -> None:
    (tmp_path / "shards").mkdir()
    assert main(["stats", str(tmp_path)]) == 2
    assert "interrupted prepare" in capsys.readouterr().err


@pytest.mark.slow
def test_default_corpus_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "dd"
    r = cli(
        "prepare", "--out", str(out), "--vocab-size", "1024", "--val-fraction", "0.02", "--quiet"
    )
    assert r.returncode == 0, r.stderr
    man = json.loads((out / MANIFEST).read_text())
    assert man["inputs"]["kind"] == "default-corpus"
    assert man["inputs"]["files"] > 500
    assert man["totals"]["documents"] > 500
    assert man["splits"]["val"]["documents"] > 5
    assert cli("verify", str(out)).returncode == 0
    st = cli("stats", str(out))
    assert st.returncode == 0
    assert "DD / C&C" in st.stdout
