"""Reading documents from files, losing nothing silently.

Files are local paths or URLs (``s3://``, ``gs://``, ...), found and opened by
:mod:`ddecomp.preparing.inputs`; every format below is read as a stream from either. Formats
(chosen by
file name suffix, see :data:`~ddecomp.preparing.inputs.SUPPORTED_SUFFIXES`):

- ``.jsonl``, ``.jsonl.gz``, ``.jsonl.zst``: one JSON object per line, the document in the field
  ``text_field`` (default ``text``). Compressed files are decompressed as a stream (``gzip``;
  every frame of a ``.zst``), so memory is one line, whatever the file size. A compressed file
  cut short (truncated copy or download) is an ``unreadable_file`` at the line where it stops,
  its earlier documents kept. A line that is not one parseable JSON object (including one
  nested too deep or with an integer Python refuses to convert) is ``invalid_json``. Lines have no
  length limit: a single 40 MB document (10M tokens) is read like any other. Blank lines carry no
  document and are passed over.
- ``.parquet``: the string column ``text_field``, read batch by batch (pyarrow ``iter_batches``),
  so memory is one batch, not the file.
- ``.txt``, ``.md``, ``.rst``: the whole file is one document. The built-in default corpus
  (:func:`~ddecomp.preparing.inputs.default_corpus_files`) reads Python's ``.py`` sources the same
  way.

Bad input never stops a run silently and never disappears silently: each bad document (or
unreadable file) is skipped, counted in :class:`IngestStats` under one of :data:`SKIP_REASONS`, and
logged as a warning on ``logging.getLogger("ddecomp.preparing.ingest")`` with its location
(``file:line``;
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
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

from ddecomp.errors import UserError
from ddecomp.preparing.inputs import (
    SUPPORTED_SUFFIXES,
    InputFile,
    is_url,
    open_input,
    remote_error,
    suffix_kind,
)

logger = logging.getLogger(__name__)

SKIP_REASONS = (
    "invalid_json",
    "invalid_utf8",
    "missing_field",
    "non_text_field",
    "empty_document",
    "unreadable_file",
)
_LOG_FIRST = 10  # bad inputs logged one by one per reason; the rest are summarised
_STRING_TYPES = (pa.string(), pa.large_string())
_PARQUET_BATCH_ROWS = 1024


@dataclass
class IngestStats:
    """Counts of what was read: documents yielded, their UTF-8 bytes, and skips by reason."""

    documents: int = 0
    text_bytes: int = 0
    skipped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SKIP_REASONS, 0))

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())

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


class _ZstdFrames(io.RawIOBase):
    """Every frame of a zstd stream, decompressed; ``EOFError`` if the input ends inside one.

    zstandard's own ``stream_reader`` returns a clean end of stream for a frame cut short (a
    truncated download or copy), so the documents after the cut would vanish uncounted; this one
    raises like ``gzip`` does, and the caller counts an ``unreadable_file`` at the line where the
    data stopped. Input goes to the decompressor in 16 KiB pieces, which bounds the output held
    at once by the compression ratio (~10x on text: ~160 KB).
    """

    _READ = 1 << 14

    def __init__(self, raw: IO[bytes]) -> None:
        super().__init__()
        self._raw = raw
        self._dctx = zstandard.ZstdDecompressor()
        self._frame = self._dctx.decompressobj()
        self._in_frame = False  # input was given to the current frame, which has not ended
        self._out = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        while not self._out:
            data = self._raw.read(self._READ)
            if not data:
                if self._in_frame:
                    raise EOFError("zstd input ended inside a frame (truncated file?)")
                return 0
            self._out = memoryview(self._decompress(data))
        n = min(len(buf), len(self._out))
        buf[:n] = self._out[:n]
        self._out = self._out[n:]
        return n

    def _decompress(self, data: bytes) -> bytes:
        out = []
        while data:
            out.append(self._frame.decompress(data))
            self._in_frame = True
            data = b""
            if self._frame.eof:  # the frame ended; what follows starts the next one
                data = self._frame.unused_data
                self._frame = self._dctx.decompressobj()
                self._in_frame = False
        return b"".join(out)


@contextmanager
def _open_jsonl(path: InputFile, kind: str) -> Iterator[IO[bytes] | io.BufferedIOBase]:
    """The file's decompressed bytes as a stream; every layer closed on exit."""
    with open_input(path) as raw:
        if kind == "jsonl.gz":
            with gzip.GzipFile(fileobj=raw, mode="rb") as gz:
                yield gz
        elif kind == "jsonl.zst":
            with io.BufferedReader(_ZstdFrames(raw), buffer_size=1 << 20) as zst:
                yield zst
        else:
            yield raw


def _jsonl_documents(
    path: InputFile, kind: str, text_field: str, stats: IngestStats, skip: _Skips
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
                    skip(
                        "invalid_json", where, f"{e.msg} (column {e.colno})"
                    )  # msg may end in "at"
                    continue
                except (ValueError, RecursionError) as e:
                    # Valid JSON that Python will not build: an integer over the 4300-digit
                    # conversion limit (ValueError), arrays nested past the recursion limit.
                    skip("invalid_json", where, f"{type(e).__name__}: {str(e)[:100]}")
                    continue
                if not isinstance(obj, dict):
                    skip("invalid_json", where, f"a JSON {type(obj).__name__}, not an object")
                    continue
                if text_field not in obj:
                    keys = ", ".join(sorted(obj)[:10]) or "(none)"
                    skip(
                        "missing_field",
                        where,
                        f"no field {text_field!r} (fields: {keys}); name the text's field "
                        "with --text-field",
                    )
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
    path: InputFile, text_field: str, stats: IngestStats, skip: _Skips
) -> Iterator[str]:
    if not is_url(path):  # pyarrow reads a local file itself (no Python-level reads)
        yield from _parquet_rows(path, str(path), text_field, stats, skip)
        return
    try:
        fh = open_input(path)
    except OSError as e:
        skip("unreadable_file", f"{path}:row 1", f"{type(e).__name__}: {e}")
        return
    with fh:
        yield from _parquet_rows(path, fh, text_field, stats, skip)


def _parquet_rows(
    path: InputFile, source: str | IO[bytes], text_field: str, stats: IngestStats, skip: _Skips
) -> Iterator[str]:
    row = 0
    try:
        pf = pq.ParquetFile(source)
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


def _text_document(path: InputFile, stats: IngestStats, skip: _Skips) -> Iterator[str]:
    try:
        with open_input(path) as fh:
            data = fh.read()
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
    files: Sequence[InputFile],
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
            kind = suffix_kind(path)
            if kind is None:
                raise UserError(
                    f"input file {path} has an unsupported suffix; "
                    f"supported: {', '.join(SUPPORTED_SUFFIXES)}"
                )
            if kind == "parquet":
                docs = _parquet_documents(path, text_field, stats, skip)
            elif kind == "text":
                docs = _text_document(path, stats, skip)
            else:
                docs = _jsonl_documents(path, kind, text_field, stats, skip)
            if not is_url(path):
                yield from docs
                continue
            try:
                yield from docs
            except UserError:
                raise
            except Exception as e:  # a backend's network or credential error, whatever its type
                raise UserError(
                    f"{path}: reading failed ({remote_error(e)}); check the URL, network and "
                    "credentials, then rerun the same command"
                ) from e
    finally:
        skip.summarise()
