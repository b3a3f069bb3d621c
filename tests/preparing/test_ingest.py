"""Tests for ddecomp.preparing.ingest: formats round-trip; each bad input is counted, logged, or
strict."""

from __future__ import annotations

import gzip
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from ddecomp.errors import UserError
from ddecomp.preparing.ingest import SKIP_REASONS, IngestStats, iter_documents

DOCS = ["first document", "second\nwith a newline", "third: ünïcødé ✓ 文字", '{"json": "inside"}']
LOGGER = "ddecomp.preparing.ingest"


def _jsonl_bytes(records: Sequence[object]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


def write_jsonl(path: Path, lines: list[bytes]) -> Path:
    """Write raw lines (bytes, without newline) in the format the suffix names."""
    data = b"".join(line + b"\n" for line in lines)
    if path.name.endswith(".gz"):
        data = gzip.compress(data)
    elif path.name.endswith(".zst"):
        data = zstandard.ZstdCompressor().compress(data)
    path.write_bytes(data)
    return path


def read_all(files: list[Path], **kw: object) -> tuple[list[str], IngestStats]:
    stats = IngestStats()
    docs = list(iter_documents(files, stats=stats, **kw))  # type: ignore[arg-type]
    return docs, stats


# ----------------------------------------------------------------------------- formats round-trip


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz", ".jsonl.zst"])
def test_jsonl_formats_round_trip(tmp_path: Path, suffix: str) -> None:
    path = write_jsonl(tmp_path / f"d{suffix}", [json.dumps({"text": d}).encode() for d in DOCS])
    docs, stats = read_all([path])
    assert docs == DOCS
    assert stats.documents == len(DOCS)
    assert stats.text_bytes == sum(len(d.encode()) for d in DOCS)
    assert stats.skipped_total == 0


def test_jsonl_custom_text_field_and_blank_lines(tmp_path: Path) -> None:
    lines = [json.dumps({"content": d, "text": 1}).encode() for d in DOCS]
    lines.insert(1, b"")
    lines.insert(3, b"   ")
    path = write_jsonl(tmp_path / "d.jsonl", lines)
    docs, stats = read_all([path], text_field="content")
    assert docs == DOCS
    assert stats.skipped_total == 0  # blank lines hold no document: nothing is lost


def test_jsonl_bom_on_first_line(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [b"\xef\xbb\xbf" + json.dumps({"text": "a"}).encode()])
    assert read_all([path])[0] == ["a"]


@pytest.mark.parametrize("large", [False, True])
def test_parquet_round_trip_across_batches(tmp_path: Path, large: bool) -> None:
    texts = [f"doc {i} " + "x" * (i % 7) for i in range(2500)]  # > 2 batches of 1024 rows
    typ = pa.large_string() if large else pa.string()
    table = pa.table({"id": list(range(len(texts))), "text": pa.array(texts, type=typ)})
    pq.write_table(table, tmp_path / "d.parquet", row_group_size=700)
    docs, stats = read_all([tmp_path / "d.parquet"])
    assert docs == texts
    assert stats.documents == len(texts)


@pytest.mark.parametrize("suffix", [".txt", ".md", ".rst"])
def test_text_files_are_one_document_each(tmp_path: Path, suffix: str) -> None:
    paths = []
    for i, d in enumerate(DOCS):
        paths.append(tmp_path / f"{i}{suffix}")
        paths[-1].write_text(d, encoding="utf-8")
    docs, stats = read_all(paths)
    assert docs == DOCS
    assert stats.text_bytes == sum(len(d.encode()) for d in DOCS)


def test_mixed_formats_keep_given_order(tmp_path: Path) -> None:
    a = write_jsonl(tmp_path / "a.jsonl.zst", [json.dumps({"text": "A1"}).encode()])
    (tmp_path / "b.txt").write_text("B")
    pq.write_table(pa.table({"text": ["C1", "C2"]}), tmp_path / "c.parquet")
    files = [tmp_path / "c.parquet", tmp_path / "b.txt", a]
    assert read_all(files)[0] == ["C1", "C2", "B", "A1"]


@settings(max_examples=40, deadline=None)
@given(texts=st.lists(st.text(min_size=1).filter(lambda t: not t.isspace()), max_size=8))
def test_jsonl_round_trips_any_text(
    tmp_path_factory: pytest.TempPathFactory, texts: list[str]
) -> None:
    texts = [t for t in texts if not any(0xD800 <= ord(c) <= 0xDFFF for c in t)]
    path = tmp_path_factory.mktemp("h") / "d.jsonl"
    write_jsonl(path, [json.dumps({"text": t}).encode() for t in texts])
    assert read_all([path])[0] == texts


def test_huge_single_document(tmp_path: Path) -> None:
    # ~40 MB in one JSON line (a 10M-token document): no per-line limit anywhere.
    text = "word " * 8_000_000
    path = write_jsonl(tmp_path / "big.jsonl", [json.dumps({"text": text}).encode()])
    docs, stats = read_all([path])
    assert len(docs) == 1
    assert docs[0] == text
    assert stats.text_bytes == 40_000_000


# ------------------------------------------------------------------------------------ bad input

GOOD = json.dumps({"text": "good"}).encode()
BAD_JSONL_LINES = {
    "malformed": ("invalid_json", b'{"text": "unterminated'),
    "not_object": ("invalid_json", b'["a", "list"]'),
    "bad_utf8": ("invalid_utf8", b'{"text": "caf\xe9"}'),
    "lone_surrogate": ("invalid_utf8", b'{"text": "x\\ud800y"}'),
    "missing": ("missing_field", b'{"body": "no text field"}'),
    "number": ("non_text_field", b'{"text": 5}'),
    "null": ("non_text_field", b'{"text": null}'),
    "empty": ("empty_document", b'{"text": ""}'),
    "whitespace": ("empty_document", b'{"text": " \\n\\t "}'),
}


@pytest.mark.parametrize("case", sorted(BAD_JSONL_LINES))
@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz", ".jsonl.zst"])
def test_bad_jsonl_line_is_counted_logged_or_strict(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, case: str, suffix: str
) -> None:
    reason, line = BAD_JSONL_LINES[case]
    path = write_jsonl(tmp_path / f"d{suffix}", [GOOD, line, GOOD])
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        docs, stats = read_all([path])
    assert docs == ["good", "good"]
    assert stats.skipped == {r: int(r == reason) for r in SKIP_REASONS}
    assert stats.documents == 2
    messages = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert len(messages) == 1
    assert f"{path}:2" in messages[0]
    assert reason in messages[0]
    with pytest.raises(UserError, match=rf"{path}:2: {reason}"):
        read_all([path], strict=True)


def _bad_text_file(tmp_path: Path) -> tuple[Path, str, str]:
    path = tmp_path / "bad.txt"
    path.write_bytes(b"line one\nline two \xff\n")
    return path, "invalid_utf8", f"{path}:2"


def _empty_text_file(tmp_path: Path) -> tuple[Path, str, str]:
    path = tmp_path / "empty.md"
    path.write_bytes(b"  \n\n")
    return path, "empty_document", f"{path}:1"


def _directory_named_txt(tmp_path: Path) -> tuple[Path, str, str]:
    path = tmp_path / "dir.txt"  # reading it fails with IsADirectoryError, even as root
    path.mkdir()
    return path, "unreadable_file", f"{path}:1"


def _corrupt_gzip(tmp_path: Path) -> tuple[Path, str, str]:
    path = tmp_path / "corrupt.jsonl.gz"
    path.write_bytes(b"this is not gzip data\n")
    return path, "unreadable_file", f"{path}:1"


def _truncated_gzip(tmp_path: Path) -> tuple[Path, str, str]:
    # Three good lines survive; the cut lands inside the large fourth line.
    data = gzip.compress(_jsonl_bytes([{"text": "good"}] * 3 + [{"text": "y" * 100_000}]))
    path = tmp_path / "truncated.jsonl.gz"
    path.write_bytes(data[: len(data) - 40])
    return path, "unreadable_file", f"{path}:4"


def _corrupt_zstd(tmp_path: Path) -> tuple[Path, str, str]:
    path = tmp_path / "corrupt.jsonl.zst"
    path.write_bytes(b"\x28\xb5\x2f\xfd garbage after the zstd magic")
    return path, "unreadable_file", f"{path}:1"


def _corrupt_parquet(tmp_path: Path) -> tuple[Path, str, str]:
    path = tmp_path / "corrupt.parquet"
    path.write_bytes(b"PAR1 not really parquet")
    return path, "unreadable_file", f"{path}:row 1"


def _parquet_bad_rows(tmp_path: Path) -> tuple[Path, str, str]:
    offsets = pa.py_buffer(bytes([0, 0, 0, 0, 4, 0, 0, 0, 5, 0, 0, 0]))
    arr = pa.Array.from_buffers(pa.string(), 2, [None, offsets, pa.py_buffer(b"good\xff")])
    path = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"text": arr}), path)  # row 2 is invalid UTF-8
    return path, "invalid_utf8", f"{path}:row 2"


def _parquet_null_row(tmp_path: Path) -> tuple[Path, str, str]:
    path = tmp_path / "nulls.parquet"
    pq.write_table(pa.table({"text": pa.array(["good", None], pa.string())}), path)
    return path, "non_text_field", f"{path}:row 2"


BAD_FILES: dict[str, Callable[[Path], tuple[Path, str, str]]] = {
    "bad_utf8_text": _bad_text_file,
    "empty_text": _empty_text_file,
    "directory": _directory_named_txt,
    "corrupt_gzip": _corrupt_gzip,
    "truncated_gzip": _truncated_gzip,
    "corrupt_zstd": _corrupt_zstd,
    "corrupt_parquet": _corrupt_parquet,
    "parquet_bad_utf8_row": _parquet_bad_rows,
    "parquet_null_row": _parquet_null_row,
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_file_is_counted_logged_or_strict(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, case: str
) -> None:
    bad, reason, where = BAD_FILES[case](tmp_path)
    good = tmp_path / "good.txt"
    good.write_text("after the bad file")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        docs, stats = read_all([bad, good])
    assert docs[-1] == "after the bad file"  # reading goes on after the bad input
    assert all(d == "good" for d in docs[:-1])
    assert stats.skipped == {r: int(r == reason) for r in SKIP_REASONS}
    messages = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert len(messages) == 1
    assert messages[0].startswith(f"{where}: skipped ({reason})")
    with pytest.raises(UserError, match=f"{where}: {reason}"):
        read_all([bad, good], strict=True)


def test_logging_caps_at_ten_per_reason_then_summarises(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    lines = [b"{broken"] * 15 + [b'{"no": 1}'] * 3 + [GOOD]
    path = write_jsonl(tmp_path / "d.jsonl", lines)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        docs, stats = read_all([path])
    assert docs == ["good"]
    assert stats.skipped["invalid_json"] == 15
    assert stats.skipped["missing_field"] == 3
    messages = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    individual = [m for m in messages if "skipped (invalid_json)" in m]
    assert [m.split(": ")[0] for m in individual] == [f"{path}:{i}" for i in range(1, 11)]
    assert "5 more invalid_json inputs skipped" in messages[-1]
    assert sum("skipped (missing_field)" in m for m in messages) == 3
    assert len(messages) == 10 + 3 + 1


def test_parquet_missing_or_non_string_column_is_user_error(tmp_path: Path) -> None:
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"body": ["a"], "n": [1]}), path)
    with pytest.raises(UserError, match=r"d\.parquet: no column 'text' \(columns: body, n\)"):
        read_all([path])
    with pytest.raises(UserError, match="column 'n' has type int64, not string"):
        read_all([path], text_field="n")


# ------------------------------------------------------------------------------------ discovery


def test_stats_as_dict() -> None:
    a = IngestStats(documents=5, text_bytes=15)
    a.skipped["invalid_json"] = 1
    a.skipped["empty_document"] = 4
    d = a.as_dict()
    assert d["documents"] == 5
    assert d["text_bytes"] == 15
    assert d["skipped"]["invalid_json"] == 1
    assert d["skipped"]["empty_document"] == 4
    assert d["skipped_total"] == 5
    assert set(d["skipped"]) == set(SKIP_REASONS)
    json.dumps(d)  # manifest-ready


def test_log_skips_false_counts_without_logging(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [b"{broken"] * 12 + [GOOD])
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        stats = IngestStats()
        docs = list(iter_documents([path], stats=stats, log_skips=False))
    assert docs == ["good"]
    assert stats.skipped["invalid_json"] == 12
    assert not [r for r in caplog.records if r.name == LOGGER]
    with pytest.raises(UserError, match=f"{path}:1: invalid_json"):
        list(iter_documents([path], strict=True, log_skips=False))
