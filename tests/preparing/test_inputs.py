"""Tests for ddecomp.preparing.inputs: discovery of local files and URLs, and reading through
fsspec."""

from __future__ import annotations

import gzip
import json
import sysconfig
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from fsspec.implementations.memory import MemoryFileSystem

from ddecomp.cli import main
from ddecomp.data.dataset import open_dataset
from ddecomp.errors import UserError
from ddecomp.preparing.ingest import IngestStats, iter_documents
from ddecomp.preparing.inputs import SUPPORTED_SUFFIXES, default_corpus_files, discover_inputs
from ddecomp.preparing.pipeline import PrepareConfig, prepare

DOCS = [f"document {i}: " + "word " * (i * 37 % 300) + "✓ end" for i in range(60)]


def test_discover_expands_directories_sorted_and_keeps_file_order(tmp_path: Path) -> None:
    (tmp_path / "d" / "sub").mkdir(parents=True)
    for name in ["d/b.txt", "d/a.jsonl", "d/sub/c.parquet", "d/sub/z.jsonl.zst", "d/notes.csv"]:
        (tmp_path / name).write_text("x")
    (tmp_path / "lone.md").write_text("x")
    found = discover_inputs([tmp_path / "lone.md", tmp_path / "d"])
    rel = [Path(p).relative_to(tmp_path).as_posix() for p in found]
    assert rel == ["lone.md", "d/a.jsonl", "d/b.txt", "d/sub/c.parquet", "d/sub/z.jsonl.zst"]


def test_discover_reads_a_file_given_twice_once(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("x")
    assert discover_inputs([tmp_path / "a.txt", tmp_path, str(tmp_path / "a.txt")]) == [
        tmp_path / "a.txt"
    ]


def test_discover_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"missing\.jsonl does not exist"):
        discover_inputs([tmp_path / "missing.jsonl"])
    (tmp_path / "data.csv").write_text("x")
    with pytest.raises(UserError, match=r"data\.csv has an unsupported suffix; supported: .*\.zst"):
        discover_inputs([tmp_path / "data.csv"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no input files"):
        discover_inputs([tmp_path / "empty"])
    with pytest.raises(UserError, match="no input files"):
        discover_inputs([])
    assert {".jsonl", ".jsonl.gz", ".jsonl.zst", ".parquet", ".txt", ".md", ".rst"} <= set(
        SUPPORTED_SUFFIXES
    )
    assert {".py", ".c", ".rs", ".go", ".java", ".ts"} <= set(SUPPORTED_SUFFIXES)


def test_default_corpus_is_the_stdlib_without_site_packages() -> None:
    files = default_corpus_files()
    root = Path(sysconfig.get_paths()["stdlib"])
    assert len(files) > 500  # vacuity guard: CPython ships well over a thousand modules
    rel = [p.relative_to(root) for p in files]
    assert all(p.suffix == ".py" for p in files)
    assert not any({"site-packages", "dist-packages"} & set(r.parts) for r in rel)
    assert [r.as_posix() for r in rel] == sorted(r.as_posix() for r in rel)
    assert Path("os.py") in rel
    assert len(set(rel)) == len(rel)
    stats = IngestStats()
    first = list(iter_documents(files[:50], stats=stats))
    assert first
    assert stats.documents + stats.skipped_total == 50


def _write_corpus(root: Path) -> None:
    """The same 60 documents in every supported format, spread over nested folders."""
    (root / "sub").mkdir(parents=True)
    lines = b"".join(json.dumps({"text": d}).encode() + b"\n" for d in DOCS[:15])
    (root / "a.jsonl").write_bytes(lines)
    gz = b"".join(json.dumps({"text": d}).encode() + b"\n" for d in DOCS[15:30])
    (root / "b.jsonl.gz").write_bytes(gzip.compress(gz))
    zs = b"".join(json.dumps({"text": d}).encode() + b"\n" for d in DOCS[30:45])
    (root / "sub" / "c.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(zs))
    pq.write_table(pa.table({"text": DOCS[45:58]}), root / "sub" / "d.parquet", row_group_size=4)
    (root / "sub" / "e.txt").write_text(DOCS[58])
    (root / "sub" / "f.md").write_text(DOCS[59])
    (root / "sub" / "skip.csv").write_text("not an input")


@pytest.fixture
def memory_corpus(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """The corpus both on disk and in fsspec's in-memory filesystem (a stand-in object store)."""
    local = tmp_path / "corpus"
    _write_corpus(local)
    fs = fsspec.filesystem("memory")
    root = f"/corpus-{uuid.uuid4().hex}"
    for p in local.rglob("*"):
        if p.is_file():
            fs.pipe(f"{root}/{p.relative_to(local).as_posix()}", p.read_bytes())
    yield f"memory://{root}", local
    fs.rm(root, recursive=True)


def test_a_url_prefix_is_discovered_and_read_like_the_local_directory(memory_corpus) -> None:
    url, local = memory_corpus
    found = discover_inputs([url])
    assert all(isinstance(f, str) and f.startswith("memory://") for f in found)
    names = [str(f).split(url, 1)[1] for f in found]
    assert names == ["/a.jsonl", "/b.jsonl.gz", "/sub/c.jsonl.zst", "/sub/d.parquet",
                     "/sub/e.txt", "/sub/f.md"]  # fmt: skip
    stats = IngestStats()
    remote = list(iter_documents(found, stats=stats))
    assert remote == list(iter_documents(discover_inputs([local]))) == DOCS
    assert stats.documents == len(DOCS)
    assert stats.skipped_total == 0
    one = discover_inputs([f"{url}/sub/d.parquet", url])  # a file given twice is read once
    assert len(one) == len(found)
    assert one[0] == f"{url}/sub/d.parquet"


def test_prepare_from_a_url_equals_prepare_from_the_local_copy(memory_corpus, tmp_path) -> None:
    url, local = memory_corpus
    common: dict[str, Any] = {"vocab_size": 300, "min_len": 8, "max_len": 64, "quiet": True}
    prepare(PrepareConfig(out=tmp_path / "local", inputs=(str(local),), **common))
    man = prepare(PrepareConfig(out=tmp_path / "remote", inputs=(url,), **common))
    assert man["inputs"]["files"] == 6
    assert man["inputs"]["paths"][0].startswith("memory://")
    a, b = open_dataset(tmp_path / "local"), open_dataset(tmp_path / "remote")
    assert a.bucket_rows == b.bucket_rows
    assert sum(a.bucket_rows.values()) > 20  # vacuity guard
    for L, n in a.bucket_rows.items():
        np.testing.assert_array_equal(a.rows(L, np.arange(n)), b.rows(L, np.arange(n)))


def test_file_urls_prepare_with_worker_processes(tmp_path: Path) -> None:
    local = tmp_path / "corpus"
    _write_corpus(local)
    url = local.as_uri()  # file:///...
    man = prepare(PrepareConfig(out=tmp_path / "out", inputs=(url,), vocab_size=300, min_len=8,
                                max_len=64, workers=2, quiet=True))  # fmt: skip
    assert man["totals"]["documents"] == len(DOCS)
    assert man["inputs"]["paths"][0].startswith("file://")


def test_url_errors_are_one_line_user_errors(memory_corpus) -> None:
    url, _ = memory_corpus
    with pytest.raises(UserError, match=r"does not exist"):
        discover_inputs([f"{url}/missing.jsonl"])
    with pytest.raises(UserError, match=r"skip\.csv has an unsupported suffix"):
        discover_inputs([f"{url}/sub/skip.csv"])
    with pytest.raises(UserError, match=r"nosuchscheme://x: .*install the fsspec backend"):
        discover_inputs(["nosuchscheme://x"])
    fsspec.filesystem("memory").mkdir(f"{url[len('memory://') :]}/empty")
    with pytest.raises(UserError, match="no input files"):
        discover_inputs([f"{url}/empty"])


class _FlakyFS(MemoryFileSystem):
    """An object store whose reads fail with a backend error that is no OSError."""

    protocol = "flaky"

    @classmethod
    def _strip_protocol(cls, path: str) -> str:
        return str(super()._strip_protocol(path.removeprefix("flaky://")))

    def _open(self, path: str, mode: str = "rb", **kw: Any) -> Any:
        f = super()._open(path, mode, **kw)

        def read(n: int = -1) -> bytes:
            raise RuntimeError("backend exploded\nwith a second line")

        f.read = read
        return f


def test_a_backend_error_while_reading_a_url_is_one_line_not_a_skip(tmp_path: Path) -> None:
    fsspec.register_implementation("flaky", _FlakyFS, clobber=True)
    fs = fsspec.filesystem("flaky")
    root = f"/flaky-{uuid.uuid4().hex}"
    fs.pipe(f"{root}/a.txt", b"a document longer than eleven bytes")
    files = discover_inputs([f"flaky://{root}"])
    assert len(files) == 1
    with pytest.raises(UserError) as e:
        list(iter_documents(files))
    msg = str(e.value)
    assert msg.startswith(f"{files[0]}: reading failed (RuntimeError: backend exploded); ")
    assert "\n" not in msg
    code = main(["prepare", f"flaky://{root}", "--out", str(tmp_path / "out"), "--quiet"])
    assert code == 2
    assert not (tmp_path / "out" / "manifest.json").exists()


def _code_tree(root: Path) -> None:
    (root / "pkg" / "sub").mkdir(parents=True)
    (root / "pkg" / "a.py").write_text("def a():\n    return 1\n")
    (root / "pkg" / "sub" / "b.py").write_text("import os\n")
    (root / "pkg" / "c.c").write_text("int main(void) { return 0; }\n")
    (root / "pkg" / "README.md").write_text("# readme\n")
    (root / "pkg" / "data.bin").write_bytes(b"\x00\x01")


def test_source_files_are_documents_one_per_file(tmp_path: Path) -> None:
    # Issue 12 item 6: a directory of .py files was passed over whole (1 document from 116 files).
    _code_tree(tmp_path)
    files = discover_inputs([tmp_path / "pkg"])
    names = sorted(Path(f).name for f in files)
    assert names == ["README.md", "a.py", "b.py", "c.c"]  # data.bin passed over
    stats = IngestStats()
    docs = list(iter_documents(files, stats=stats))
    assert len(docs) == 4
    assert stats.documents == 4
    assert "def a():\n    return 1\n" in docs


def test_suffix_and_glob_choose_the_files(tmp_path: Path) -> None:
    _code_tree(tmp_path)
    pkg = tmp_path / "pkg"
    only_py = discover_inputs([pkg], suffixes=[".py"])
    assert sorted(Path(f).name for f in only_py) == ["a.py", "b.py"]
    assert sorted(Path(f).name for f in discover_inputs([pkg], suffixes=["C", "md"])) == [
        "README.md",
        "c.c",
    ]  # case and the leading dot do not matter
    assert [Path(f).name for f in discover_inputs([pkg], glob="sub/*")] == ["b.py"]
    assert sorted(Path(f).name for f in discover_inputs([pkg], glob="*.py")) == ["a.py", "b.py"]
    with pytest.raises(UserError, match=r"--suffix '\.bin' is not a format"):
        discover_inputs([pkg], suffixes=[".bin"])
    with pytest.raises(UserError, match="selected by --suffix/--glob"):
        discover_inputs([pkg], glob="nothing/*")
