"""Faults of ``prepare`` that used to lose or corrupt data silently (issue 11), one test each.

Each test states the data property that must hold: a truncated input is counted, not dropped;
``--overwrite`` removes only ddecomp's own files; an edited input or a damaged kept shard is never
mixed into a dataset; a pathological record is one counted skip; a long document is tokenized in
pieces exactly as a whole; a ``--from-tokens`` flag that cannot be right is refused; files follow
the umask.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zstandard

from ddecomp.cli import main
from ddecomp.data.layout import MANIFEST
from ddecomp.errors import UserError
from ddecomp.preparing import tokenize
from ddecomp.preparing.ingest import IngestStats, iter_documents

LOGGER = "ddecomp.preparing.ingest"


def _lines(n: int, start: int = 0) -> bytes:
    return b"".join(
        json.dumps({"text": f"document {i} " + "word " * 30}).encode() + b"\n"
        for i in range(start, start + n)
    )


def _prepare(*args: str | Path) -> int:
    return main(["prepare", *(str(a) for a in args), "--quiet"])


def _tokens_file(path: Path, n_docs: int = 400, seed: int = 0, dtype: str = "uint16") -> Path:
    """Documents of random ids in [1, 999], EOS 0 after each."""
    rng = np.random.default_rng(seed)
    docs = [np.append(rng.integers(1, 1000, rng.integers(20, 400)), 0) for _ in range(n_docs)]
    np.concatenate(docs).astype(dtype).tofile(path)
    return path


def _tokens_args(tok: Path, out: Path) -> list[str | Path]:
    """``prepare --from-tokens`` of a :func:`_tokens_file` (EOS 0) into ``out``, min length 8."""
    return ["--from-tokens", tok, "--eos-id", "0", "--out", out, "--min-len", "8"]


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


# ---- 4: a truncated .jsonl.zst is an unreadable file, counted where it stopped -------------------
@pytest.mark.parametrize("frames", [1, 2])
def test_truncated_zstd_is_counted_as_unreadable_where_it_stopped(
    tmp_path: Path, frames: int, caplog: pytest.LogCaptureFixture
) -> None:
    c = zstandard.ZstdCompressor()
    whole = [c.compress(_lines(100, 100 * k)) for k in range(frames)]
    path = tmp_path / "d.jsonl.zst"
    path.write_bytes(b"".join(whole))
    stats = IngestStats()
    assert len(list(iter_documents([path], stats=stats))) == 100 * frames  # every frame is read
    assert stats.skipped_total == 0
    path.write_bytes(b"".join(whole[:-1]) + whole[-1][: len(whole[-1]) // 2])
    stats = IngestStats()
    docs = list(iter_documents([path], stats=stats))
    assert len(docs) < 100 * frames
    assert stats.skipped["unreadable_file"] == 1
    assert f"d.jsonl.zst:{len(docs) + 1}" in caplog.text  # where it stopped
    with pytest.raises(UserError, match="unreadable_file"):
        list(iter_documents([path], strict=True))


# ---- 5: --overwrite removes only what ddecomp wrote ----------------------------------------------
def test_overwrite_refuses_a_foreign_directory_and_keeps_its_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tok = _tokens_file(tmp_path / "t.bin")
    out = tmp_path / "theirs"
    (out / "shards").mkdir(parents=True)
    mine = {
        "manifest.json": b'{"my": "own manifest"}',
        "tokenizer.json": b'{"my": "tokenizer"}',
        "shards/data.bin": b"precious",
    }
    for rel, data in mine.items():
        (out / rel).write_bytes(data)
    assert _prepare("--from-tokens", tok, "--eos-id", "0", "--out", out, "--overwrite") == 2
    line = _error_line(capsys)
    assert "not write" in line
    assert "--overwrite" not in line
    for rel, data in mine.items():
        assert (out / rel).read_bytes() == data
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == sorted([*mine, "shards"])


def test_overwrite_of_a_dataset_keeps_files_ddecomp_did_not_write(tmp_path: Path) -> None:
    tok = _tokens_file(tmp_path / "t.bin")
    out = tmp_path / "ds"
    common = _tokens_args(tok, out)
    assert _prepare(*common, "--max-len", "64", "--shard-size", "0.01") == 0
    old_shards = json.loads((out / MANIFEST).read_text())["totals"]["shards"]
    assert old_shards > 3
    (out / "NOTES.md").write_text("my notes")
    (out / "shards" / "notes.txt").write_text("mine too")
    assert _prepare(*common, "--max-len", "128", "--overwrite") == 0
    assert (out / "NOTES.md").read_text() == "my notes"
    assert (out / "shards" / "notes.txt").read_text() == "mine too"
    man = json.loads((out / MANIFEST).read_text())
    assert man["totals"]["shards"] == 1
    assert man["max_len"] == 128
    # no file of the old run is left behind
    listed = {f["path"] for s in man["shards"] for f in s["files"].values()}
    listed |= {f["path"] for s in man["shards"] for b in s["buckets"].values() for f in b.values()}
    on_disk = {str(p.relative_to(out)) for p in (out / "shards").iterdir()}
    assert on_disk - {"shards/notes.txt"} == listed | {"shards/00000.done.json"}
    assert main(["verify", str(out)]) == 0


# ---- 7: inputs identified by size and mtime; kept shards by sha256 -------------------------------
def test_input_edited_in_place_after_a_finished_run_is_not_nothing_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tok = _tokens_file(tmp_path / "t.bin")
    out = tmp_path / "ds"
    common = _tokens_args(tok, out)
    assert _prepare(*common) == 0
    arr = np.fromfile(tok, np.uint16)
    arr[arr == 5] = 6  # same size, other content
    st = tok.stat()
    arr.tofile(tok)
    os.utime(tok, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert _prepare(*common) == 2
    assert "inputs" in _error_line(capsys)


def test_input_edited_after_an_interrupt_is_never_mixed_in(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tok = _tokens_file(tmp_path / "t.bin")
    out = tmp_path / "ds"
    common = _tokens_args(tok, out)
    assert _prepare(*common, "--shard-size", "0.01") == 0
    (out / MANIFEST).unlink()  # as an interrupted run leaves it
    for p in list((out / "shards").glob("0000[3-9].done.json")):
        p.unlink()
    arr = np.fromfile(tok, np.uint16)
    arr[arr == 5] = 6
    st = tok.stat()
    arr.tofile(tok)
    os.utime(tok, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert _prepare(*common, "--shard-size", "0.01") == 2
    assert "inputs" in _error_line(capsys)
    assert not (out / MANIFEST).exists()


def test_tokenizer_file_edited_after_an_interrupt_is_not_resumed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "d.jsonl"
    data.write_bytes(_lines(50))
    tok_file = tmp_path / "tok.json"
    tokenize.save_tokenizer(tokenize.train_bpe([data.read_text()], vocab_size=300), tok_file)
    out = tmp_path / "ds"
    common: list[str | Path] = [data, "--tokenizer", tok_file, "--out", out, "--min-len", "8"]
    assert _prepare(*common, "--workers", "1") == 0
    (out / MANIFEST).unlink()  # interrupted
    st = tok_file.stat()
    os.utime(tok_file, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert _prepare(*common, "--workers", "1") == 2
    assert "tokenizer" in _error_line(capsys)


def test_input_edited_during_the_run_is_never_finalised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from ddecomp.preparing import fromtokens  # the --from-tokens path

    tok = _tokens_file(tmp_path / "t.bin")
    run_shards = fromtokens.run_shards

    def edit_midway(*args: Any, **kwargs: Any) -> Any:
        records = run_shards(*args, **kwargs)
        st = tok.stat()
        os.utime(tok, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        return records

    monkeypatch.setattr(fromtokens, "run_shards", edit_midway)
    out = tmp_path / "ds"
    assert _prepare(*_tokens_args(tok, out)) == 2
    assert "while prepare read it" in _error_line(capsys)
    assert not (out / MANIFEST).exists()


def test_a_kept_shard_with_a_flipped_byte_is_redone(tmp_path: Path) -> None:
    tok = _tokens_file(tmp_path / "t.bin")
    out = tmp_path / "ds"
    common = _tokens_args(tok, out)
    assert _prepare(*common) == 0
    shard = out / "shards" / "00000.tokens.bin"
    good = shard.read_bytes()
    (out / MANIFEST).unlink()  # interrupted after the shard was done
    bad = bytearray(good)
    bad[100] ^= 0xFF
    shard.write_bytes(bytes(bad))
    assert _prepare(*common) == 0
    assert shard.read_bytes() == good
    assert main(["verify", str(out)]) == 0


# ---- 10: any record that fails to parse is one counted skip --------------------------------------
def test_pathological_json_records_are_counted_skips(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    deep = "[" * 100_000 + "]" * 100_000
    lines = [
        json.dumps({"text": "before"}),
        '{"text": "deep", "x": ' + deep + "}",
        '{"text": "digits", "n": ' + "7" * 5000 + "}",
        deep,
        json.dumps({"text": "after"}),
    ]
    path.write_text("\n".join(lines) + "\n")
    stats = IngestStats()
    assert list(iter_documents([path], stats=stats)) == ["before", "after"]
    assert stats.skipped["invalid_json"] == 3
    with pytest.raises(UserError, match=r"d\.jsonl:2: invalid_json"):
        list(iter_documents([path], strict=True))


# ---- 11: a long document is tokenized in bounded pieces, exactly as a whole ----------------------
class _Spy:
    """A tokenizer that records the longest text it was asked to encode."""

    def __init__(self, tok: Any) -> None:
        object.__setattr__(self, "tok", tok)
        object.__setattr__(self, "longest", 0)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.tok, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self.tok, name, value)

    def _note(self, texts: list[str]) -> None:
        object.__setattr__(self, "longest", max([self.longest, *map(len, texts)]))

    def encode_batch_fast(self, texts: list[str], **kw: Any) -> Any:
        self._note(texts)
        return self.tok.encode_batch_fast(texts, **kw)

    def encode_batch(self, texts: list[str], **kw: Any) -> Any:
        self._note(texts)
        return self.tok.encode_batch(texts, **kw)

    def encode(self, text: str, **kw: Any) -> Any:
        self._note([text])
        return self.tok.encode(text, **kw)


def _seam_sensitive_text(n_lines: int, seed: int) -> str:
    """Lines ending in spaces, blank lines, indented lines, digits: naive cuts change tokens."""
    rng = np.random.default_rng(seed)
    words = ["alpha", "beta", "  gamma", "1234567", "é", "<|endoftext|>", "\t", " ", ".", "x"]
    out = []
    for _ in range(n_lines):
        line = " ".join(rng.choice(words, int(rng.integers(0, 12))))
        out.append(line + " " * int(rng.integers(0, 3)))
    return "\n".join(out)


def test_long_documents_are_tokenized_in_pieces_exactly_as_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    text = _seam_sensitive_text(3000, seed=1)
    tok = tokenize.train_bpe([text], vocab_size=400)
    tok.encode_special_tokens = True

    def whole(t: str) -> list[int]:
        return list(tok.encode(t, add_special_tokens=False).ids)

    # the input is seam-sensitive: cutting at some whitespace changes the tokens
    cuts = [i for i in range(1, 4000) if text[i].isspace() or text[i - 1].isspace()]
    head = text[:5000]
    naive = [i for i in cuts if whole(head[:i]) + whole(head[i:]) != whole(head)]
    assert len(naive) > 10
    docs = [
        "short one",
        text,
        "a" * 9000,  # no seam at all: encoded whole, still exact
        text[5000:30000],
        "last",
    ]
    monkeypatch.setattr(tokenize, "LONG_DOC_CHARS", 2000, raising=False)
    spy = _Spy(tok)
    ids, lengths = tokenize.encode_documents(spy, docs, eos_id=0)  # type: ignore[arg-type]
    expected = [[*whole(d), 0] for d in docs]
    assert lengths.tolist() == [len(e) for e in expected]
    assert ids.tolist() == [i for e in expected for i in e]
    assert 1000 < spy.longest <= 9000  # pieces of text and the seamless document, never `text`


# ---- 12: --from-tokens refuses flags that cannot be right ----------------------------------------
@pytest.mark.parametrize(
    ("write", "args", "needle"),
    [
        ("uint32", ["--eos-id", "99999999999", "--dtype", "uint32"], "--eos-id"),
        ("uint16", ["--eos-id", "0", "--dtype", "uint32"], "--dtype"),
        ("uint8.npy", ["--eos-id", "300"], "--eos-id"),
        ("uint16", ["--eos-id", "0", "--vocab-size", "500"], "--vocab-size"),
        ("uint16", ["--eos-id", "0", "--shard-size", "0"], "--shard-size"),
        ("uint16", ["--eos-id", "0", "--shard-size", "-1"], "--shard-size"),
        ("uint16", ["--eos-id", "0", "--seed", "-1"], "--seed"),
    ],
)
def test_from_tokens_flags_that_cannot_be_right_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], write: str, args: list[str], needle: str
) -> None:
    if write.endswith(".npy"):
        src = tmp_path / "t.npy"
        np.save(src, np.fromfile(_tokens_file(tmp_path / "t.bin"), np.uint16).astype(np.uint8))
    else:
        src = _tokens_file(tmp_path / "t.bin", dtype=write)
    out = tmp_path / "out"
    assert _prepare("--from-tokens", src, "--out", out, "--min-len", "8", *args) == 2
    assert needle in _error_line(capsys)
    assert not (out / MANIFEST).exists()


def test_from_tokens_honours_vocab_size(tmp_path: Path) -> None:
    tok = _tokens_file(tmp_path / "t.bin")
    out = tmp_path / "out"
    args: list[str | Path] = [
        "--from-tokens",
        tok,
        "--eos-id",
        "0",
        "--out",
        out,
        "--vocab-size",
        "2000",
    ]
    assert _prepare(*args) == 0
    assert json.loads((out / MANIFEST).read_text())["tokenizer"]["vocab_size"] == 2000


# ---- 14: files follow the umask ------------------------------------------------------------------
@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_written_files_follow_the_umask(tmp_path: Path, umask: int) -> None:
    tok = _tokens_file(tmp_path / "t.bin")
    out = tmp_path / "out"
    old = os.umask(umask)
    try:
        assert _prepare(*_tokens_args(tok, out)) == 0
    finally:
        os.umask(old)
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) > 5
    for p in files:
        assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask, p


@pytest.mark.parametrize("record", ['{"index": 0}', "[]", '{"files": {"tokens": 3}}'])
def test_a_malformed_shard_record_is_redone_on_resume(tmp_path: Path, record: str) -> None:
    """A ``done.json`` that parses but lacks what a record holds (a hand edit, another tool) is
    not a finished shard: the rerun redoes it and ends with the uninterrupted run's dataset."""
    tok = _tokens_file(tmp_path / "t.bin")
    out = tmp_path / "ds"
    shards = ("--shard-size", "0.01")  # several shards
    args = (*_tokens_args(tok, out), *shards)
    assert _prepare(*args) == 0
    want = json.loads((out / MANIFEST).read_text())["fingerprint"]
    (out / MANIFEST).unlink()  # interrupted before the manifest
    dones = sorted((out / "shards").glob("*.done.json"))
    assert len(dones) > 1
    dones[0].write_text(record)
    assert _prepare(*args) == 0
    assert json.loads((out / MANIFEST).read_text())["fingerprint"] == want
