"""Reading documents from files, losing nothing silently.

Formats (chosen by file name suffix, see :data:`SUPPORTED_SUFFIXES`):

- ``.jsonl``, ``.jsonl.gz``, ``.jsonl.zst``: one JSON object per line, the document in the field
  ``text_field`` (default ``text``). Compressed files are decompressed as a stream (``gzip``,
  ``zstandard``'s stream reader), so memory is one line, whatever the file size. Lines have no
  length limit: a single 40 MB document (10M tokens) is read like any other. Blank lines carry no
  document and are passed over.
- ``.parquet``: the string column ``text_field``, read batch by batch (pyarrow ``iter_batches``),
  so memory is one batch, not the file.
- ``.txt``, ``.md``, ``.rst``: the whole file is one document. The built-in default corpus
  (:func:`default_corpus_files`) reads Python's ``.py`` sources the same way.

Bad input never stops a run silently and never disappears silently: each bad document (or
unreadable file) is skipped, counted in :class:`IngestStats` under one of :data:`SKIP_REASONS`, and
logged as a warning on ``logging.getLogger("ddecomp.ingest")`` with its location (``file:line``;
``file:row N`` for parquet). The first 10 per reason are logged one by one, the rest as one summary
line per reason when iteration ends. With ``strict=True`` the first bad input raises
:class:`~ddecomp.errors.UserError` instead. Order is deterministic: files in the order given,
documents in file order.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import sysconfig
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

from .errors import UserError

logger = logging.getLogger(__name__)

SUPPORTED_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".parquet", ".txt", ".md", ".rst")
SKIP_REASONS = (
    "invalid_json",
    "invalid_utf8",
    "missing_field",
    "non_text_field",
    "empty_document",
    "unreadable_file",
)
_TEXT_SUFFIXES = (".txt", ".md", ".rst", ".py")  # .py only reaches here from the default corpus
_LOG_FIRST = 10  # bad inputs logged one by one per reason; the rest are summarised
_STRING_TYPES = (pa.string(), pa.large_string())
_PARQUET_BATCH_ROWS = 1024


def _suffix_kind(path: Path) -> str | None:
    """The format of ``path`` by name: "jsonl", "jsonl.gz", "jsonl.zst", "parquet", "text"."""
    name = path.name.lower()
    for suffix in (".jsonl.gz", ".jsonl.zst", ".jsonl", ".parquet"):
        if name.endswith(suffix):
            return suffix[1:]
    if name.endswith(_TEXT_SUFFIXES):
        return "text"
    return None


def _is_supported(path: Path) -> bool:
    return _suffix_kind(path) is not None and not path.name.lower().endswith(".py")


def discover_inputs(paths: Sequence[str | Path]) -> list[Path]:
    """The input files: files as given (in the given order), directories expanded recursively.

    A directory contributes its supported files in sorted path order; other files in it are
    passed over (counted in an info log line). A file reached twice (named and inside a named
    directory) is read once, at its first position, with a warning.
    """
    files: list[Path] = []
    seen: set[Path] = set()
    supported = ", ".join(SUPPORTED_SUFFIXES)
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file())
            chosen = [p for p in found if _is_supported(p)]
            if len(chosen) < len(found):
                logger.info(
                    "%s: %d files without a supported suffix passed over (supported: %s)",
                    path,
                    len(found) - len(chosen),
                    supported,
                )
        elif path.is_file():
            if not _is_supported(path):
                raise UserError(
                    f"input file {path} has an unsupported suffix; supported: {supported}"
                )
            chosen = [path]
        else:
            raise UserError(
                f"input {path} does not exist; pass files or directories of {supported}"
            )
        for p in chosen:
            key = p.resolve()
            if key in seen:
                logger.warning("%s: given more than once; read once, at its first position", p)
                continue
            seen.add(key)
            files.append(p)
    if not files:
        shown = ", ".join(str(p) for p in paths) or "(none)"
        raise UserError(f"no input files with a supported suffix ({supported}) in: {shown}")
    return files


def default_corpus_files() -> list[Path]:
    """The built-in default corpus: the Python standard library's own ``.py`` sources.

    Every Python installation has it without any download. One document per file, sorted by path
    relative to ``sysconfig.get_paths()["stdlib"]``; anything under ``site-packages`` or
    ``dist-packages`` (installed third-party packages, which a venv's base stdlib dir contains) is
    excluded. Size varies with the Python version: 1790 files, 31.5 MB on CPython 3.11.7, of which
    4 (test files in legacy encodings) are skipped as ``invalid_utf8`` and 28 (empty
    ``__init__.py``) as ``empty_document``: 1758 documents.
    """
    root = Path(sysconfig.get_paths()["stdlib"])
    excluded = {"site-packages", "dist-packages"}
    files = [
        p
        for p in root.rglob("*.py")
        if p.is_file() and not excluded.intersection(p.relative_to(root).parts)
    ]
    files.sort(key=lambda p: p.relative_to(root).as_posix())
    if not files:
        raise UserError(f"the default corpus is empty: no .py files under {root}; pass INPUT files")
    return files


@dataclass
class IngestStats:
    """Counts of what was read: documents yielded, their UTF-8 bytes, and skips by reason."""

    documents: int = 0
    text_bytes: int = 0
    skipped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SKIP_REASONS, 0))

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())

    def merge(self, other: IngestStats) -> None:
        """Add ``other``'s counts into this one (e.g. per-worker stats into a total)."""
        self.documents += other.documents
        self.text_bytes += other.text_bytes
        for reason, n in other.skipped.items():
            self.skipped[reason] = self.skipped.get(reason, 0) + n

    def as_dict(self) -> dict[str, Any]:
        return {
            "documents": self.documents,
            "text_bytes": self.text_bytes,
            "skipped": dict(self.skipped),
            "skipped_total": self.skipped_total,
        }


class _Skips:
    """Counts, logs (first 10 per reason) or raises (strict) for each bad input."""

    def __init__(self, stats: IngestStats, strict: bool, log: bool) -> None:
        self.stats = stats
        self.strict = strict
        self.log = log
        self.logged = dict.fromkeys(SKIP_REASONS, 0)
        self.unlogged = dict.fromkeys(SKIP_REASONS, 0)

    def __call__(self, reason: str, where: str, detail: str) -> None:
        assert reason in SKIP_REASONS, reason
        if self.strict:
            raise UserError(
                f"{where}: {reason}: {detail}; fix or remove it, or drop --strict to skip and "
                "count such input"
            )
        self.stats.skipped[reason] = self.stats.skipped.get(reason, 0) + 1
        if not self.log:
            return
        if self.logged[reason] < _LOG_FIRST:
            self.logged[reason] += 1
            logger.warning("%s: skipped (%s): %s", where, reason, detail)
        else:
            self.unlogged[reason] += 1

    def summarise(self) -> None:
        for reason, n in self.unlogged.items():
            if n:
                logger.warning(
                    "%d more %s inputs skipped (the first %d were logged above)",
                    n,
                    reason,
                    _LOG_FIRST,
                )


def _accept(text: str, where: str, stats: IngestStats, skip: _Skips) -> bool:
    """Count ``text`` as a document unless it is empty or not encodable (lone surrogates)."""
    if not text or text.isspace():  # isspace stops at the first non-space character
        skip("empty_document", where, "empty or whitespace-only document")
        return False
    try:
        n_bytes = len(text.encode("utf-8"))
    except UnicodeEncodeError as e:  # a JSON "\ud800" escape decodes to a lone surrogate
        skip("invalid_utf8", where, f"lone surrogate at character {e.start}")
        return False
    stats.documents += 1
    stats.text_bytes += n_bytes
    return True


def _open_jsonl(path: Path, kind: str) -> io.BufferedIOBase:
    if kind == "jsonl.gz":
        return gzip.open(path, "rb")
    raw = open(path, "rb")  # noqa: SIM115  (closed by the returned reader)
    if kind == "jsonl.zst":
        reader = zstandard.ZstdDecompressor().stream_reader(raw, closefd=True)
        return io.BufferedReader(reader, buffer_size=1 << 20)
    return raw


def _jsonl_documents(
    path: Path, kind: str, text_field: str, stats: IngestStats, skip: _Skips
) -> Iterator[str]:
    lineno = 0
    try:
        with _open_jsonl(path, kind) as f:
            for lineno, line in enumerate(f, start=1):
                where = f"{path}:{lineno}"
                try:
                    # utf-8-sig drops a byte-order mark, which only the first line may carry.
                    s = line.decode("utf-8-sig" if lineno == 1 else "utf-8")
                except UnicodeDecodeError as e:
                    skip("invalid_utf8", where, f"invalid UTF-8 at byte {e.start} of the line")
                    continue
                if not s or s.isspace():
                    continue  # a blank line holds no document: nothing to count or lose
                try:
                    obj = json.loads(s)
                except json.JSONDecodeError as e:
                    skip("invalid_json", where, f"{e.msg} at column {e.colno}")
                    continue
                if not isinstance(obj, dict):
                    skip("invalid_json", where, f"a JSON {type(obj).__name__}, not an object")
                    continue
                if text_field not in obj:
                    keys = ", ".join(sorted(obj)[:10]) or "(none)"
                    skip("missing_field", where, f"no field {text_field!r} (fields: {keys})")
                    continue
                text = obj[text_field]
                if not isinstance(text, str):
                    kind_name = "null" if text is None else type(text).__name__
                    skip("non_text_field", where, f"field {text_field!r} is {kind_name}")
                    continue
                if _accept(text, where, stats, skip):
                    yield text
    except (OSError, EOFError, zlib.error, zstandard.ZstdError) as e:
        skip("unreadable_file", f"{path}:{lineno + 1}", f"{type(e).__name__}: {e}")


def _parquet_documents(
    path: Path, text_field: str, stats: IngestStats, skip: _Skips
) -> Iterator[str]:
    row = 0
    try:
        pf = pq.ParquetFile(path)
        names = pf.schema_arrow.names
        if text_field not in names:
            raise UserError(
                f"{path}: no column {text_field!r} (columns: {', '.join(names)}); "
                "pass --text-field naming the text column"
            )
        col_type = pf.schema_arrow.field(text_field).type
        if col_type not in _STRING_TYPES:
            raise UserError(
                f"{path}: column {text_field!r} has type {col_type}, not string; "
                "pass --text-field naming a string column"
            )
        for batch in pf.iter_batches(batch_size=_PARQUET_BATCH_ROWS, columns=[text_field]):
            column = batch.column(0)
            # Read raw bytes and decode here, so invalid UTF-8 in a row is one counted skip,
            # not an exception for the whole batch.
            wide = col_type == pa.large_string()
            binary = column.cast(pa.large_binary() if wide else pa.binary())
            for value in binary.to_pylist():
                row += 1
                where = f"{path}:row {row}"
                if value is None:
                    skip("non_text_field", where, f"column {text_field!r} is null")
                    continue
                try:
                    text = value.decode("utf-8")
                except UnicodeDecodeError as e:
                    skip("invalid_utf8", where, f"invalid UTF-8 at byte {e.start}")
                    continue
                if _accept(text, where, stats, skip):
                    yield text
    except (OSError, pa.ArrowException) as e:
        skip("unreadable_file", f"{path}:row {row + 1}", f"{type(e).__name__}: {e}")


def _text_document(path: Path, stats: IngestStats, skip: _Skips) -> Iterator[str]:
    try:
        data = path.read_bytes()
    except OSError as e:
        skip("unreadable_file", f"{path}:1", f"{type(e).__name__}: {e}")
        return
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        skip("invalid_utf8", f"{path}:{line}", f"invalid UTF-8 at byte {e.start} of the file")
        return
    if _accept(text, f"{path}:1", stats, skip):
        yield text


def iter_documents(
    files: Sequence[Path],
    text_field: str = "text",
    strict: bool = False,
    stats: IngestStats | None = None,
    log_skips: bool = True,
) -> Iterator[str]:
    """Yield the document texts of ``files`` in order, skipping and counting bad input.

    ``stats`` (if given) is updated as documents are yielded, so it is complete once the iterator
    is exhausted. With ``strict`` the first bad input raises :class:`UserError` naming
    ``file:line`` and the reason. A parquet file without the column ``text_field`` (or with a
    non-string one) is always a :class:`UserError`: every row would be skipped otherwise.
    ``log_skips=False`` counts skips without logging them, for a second pass over the same files
    (e.g. tokenizer training before tokenizing), so each warning is shown once.
    """
    stats = IngestStats() if stats is None else stats
    skip = _Skips(stats, strict, log_skips)
    try:
        for path in files:
            path = Path(path)
            kind = _suffix_kind(path)
            if kind is None:
                raise UserError(
                    f"input file {path} has an unsupported suffix; "
                    f"supported: {', '.join(SUPPORTED_SUFFIXES)}"
                )
            if kind == "parquet":
                yield from _parquet_documents(path, text_field, stats, skip)
            elif kind == "text":
                yield from _text_document(path, stats, skip)
            else:
                yield from _jsonl_documents(path, kind, text_field, stats, skip)
    finally:
        skip.summarise()
