"""Where the input files are and how to open them: local paths, or URLs through fsspec.

An input is a local path, or a URL with a scheme (``s3://bucket/corpus/``, ``gs://...``,
``hf://datasets/...``, ``file:///...``) read through `fsspec <https://filesystem-spec.rtfd.io>`_
and whichever backend serves that scheme (``s3fs``, ``gcsfs``, ``huggingface_hub``, ...; install
it next to ddecomp). A URL is never turned into a ``Path`` (that would fold ``s3://`` into
``s3:/``); its file name, size and bytes come from its filesystem. Files are read as streams in
the main process, so an object store is read once, front to back, like a local file.

Discovery (:func:`discover_inputs`) is the same for both: files as given, in the given order;
directories (or URL prefixes) expanded recursively in sorted order, keeping supported suffixes
(or only the ``suffixes`` asked for, and only paths matching ``glob``); a file reached twice
read once. :func:`default_corpus_files` is the built-in corpus.

Source code is text: common source suffixes (:data:`SOURCE_SUFFIXES`) are read one document
per file, like ``.txt``, so a directory of code is a corpus as it stands.
"""

from __future__ import annotations

import fnmatch
import logging
import sysconfig
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any, TypeGuard

from ddecomp.errors import UserError

logger = logging.getLogger("ddecomp.preparing.ingest")  # discovery notes belong to the ingest log

# Source files read whole, one document each (lower-case; matched case-insensitively).
SOURCE_SUFFIXES = (
    ".py",
    ".pyi",
    ".c",
    ".h",
    ".cc",
    ".cpp",
    ".cxx",
    ".hpp",
    ".hh",
    ".cu",
    ".java",
    ".kt",
    ".scala",
    ".go",
    ".rs",
    ".swift",
    ".cs",
    ".js",
    ".mjs",
    ".ts",
    ".tsx",
    ".jsx",
    ".rb",
    ".php",
    ".pl",
    ".lua",
    ".r",
    ".jl",
    ".hs",
    ".ml",
    ".ex",
    ".erl",
    ".clj",
    ".sh",
    ".bash",
    ".sql",
    ".tex",
    ".html",
    ".css",
    ".toml",
    ".yaml",
    ".yml",
    ".ini",
    ".cfg",
)
_PROSE_SUFFIXES = (".txt", ".md", ".rst")
_TEXT_SUFFIXES = _PROSE_SUFFIXES + SOURCE_SUFFIXES
SUPPORTED_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".parquet", *_TEXT_SUFFIXES)
# How messages name them: the full list is long.
SUPPORTED_TEXT = ".jsonl(.gz|.zst), .parquet, .txt, .md, .rst, source code (.py, .c, .rs, ...)"

InputFile = Path | str  # a local path, or a URL (a str with "://")


def is_url(f: object) -> TypeGuard[str]:
    """True for a URL (a str with a scheme); a local path may be a ``Path`` or a plain str."""
    return isinstance(f, str) and "://" in f


def input_name(f: InputFile) -> str:
    """The file name: the last component of the path or URL."""
    return f.rstrip("/").rsplit("/", 1)[-1] if is_url(f) else Path(f).name


def suffix_kind(f: InputFile) -> str | None:
    """The format of ``f`` by name: "jsonl", "jsonl.gz", "jsonl.zst", "parquet", "text"."""
    name = input_name(f).lower()
    for suffix in (".jsonl.gz", ".jsonl.zst", ".jsonl", ".parquet"):
        if name.endswith(suffix):
            return suffix[1:]
    if name.endswith(_TEXT_SUFFIXES):
        return "text"
    return None


def _is_supported(f: InputFile) -> bool:
    return suffix_kind(f) is not None


def check_suffixes(suffixes: Sequence[str]) -> tuple[str, ...]:
    """``--suffix`` values, normalised (lower case, leading dot); each must be a readable format."""
    out = []
    for raw in suffixes:
        s = raw.strip().lower()
        s = s if s.startswith(".") else f".{s}"
        if s not in SUPPORTED_SUFFIXES:
            raise UserError(
                f"--suffix {raw!r} is not a format ddecomp reads; use some of: "
                f"{', '.join(SUPPORTED_SUFFIXES)}"
            )
        out.append(s)
    return tuple(out)


def _selector(suffixes: Sequence[str], glob: str | None) -> Callable[[str, str], bool]:
    """``keep(name, relative_path)``: supported, one of ``suffixes`` (if any), matching ``glob``
    (``fnmatch`` on the path relative to the directory given, ``/``-separated; if any)."""

    def keep(name: str, rel: str) -> bool:
        low = name.lower()
        if suffix_kind(name) is None or (suffixes and not low.endswith(tuple(suffixes))):
            return False
        return glob is None or fnmatch.fnmatchcase(rel, glob) or fnmatch.fnmatchcase(name, glob)

    return keep


def _filesystem(url: str) -> tuple[Any, str]:
    """``(filesystem, path)`` of ``url``; a missing backend or unknown scheme is a user error."""
    try:
        import fsspec
    except ImportError:
        raise UserError(f"{url}: reading URLs needs fsspec; pip install fsspec") from None
    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as e:
        raise UserError(
            f"{url}: {remote_error(e)}; install the fsspec backend for this scheme (e.g. s3fs, "
            "gcsfs)"
        ) from None


def remote_error(e: BaseException) -> str:
    """``Type: first line of the message``: a backend's error, short enough for one line."""
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


def open_input(f: InputFile) -> IO[bytes]:
    """A binary stream of ``f`` (the caller closes it)."""
    if is_url(f):
        fs, path = _filesystem(f)
        return fs.open(path, "rb")
    return open(f, "rb")


def input_stamp(f: InputFile) -> tuple[int, int | str]:
    """``(size, version)`` of ``f``: what tells a rerun that the file was edited.

    A local file's version is its ``st_mtime_ns`` (an in-place edit of the same size changes
    it); a URL's is its filesystem's ``ukey`` (the object's ETag or checksum on object stores,
    size and modification time elsewhere). Content hashes would need a second full read.
    """
    if is_url(f):
        fs, path = _filesystem(f)
        return int(fs.size(path)), str(fs.ukey(path))
    st = Path(f).stat()
    return st.st_size, st.st_mtime_ns


def _discover_url(url: str, supported: str, keep: Callable[[str, str], bool]) -> list[InputFile]:
    fs, path = _filesystem(url)
    try:
        if fs.isdir(path):
            found = sorted(fs.find(path, withdirs=False))
            base = path.rstrip("/") + "/"
            return [
                fs.unstrip_protocol(p)
                for p in found
                if keep(p.rsplit("/", 1)[-1], p[len(base) :] if p.startswith(base) else p)
            ]
        exists = fs.isfile(path)
    except Exception as e:  # a backend's network or credential error, whatever its type
        raise UserError(
            f"input {url} cannot be listed ({remote_error(e)}); check the URL, network and "
            "credentials"
        ) from None
    if not exists:
        raise UserError(f"input {url} does not exist; pass files or prefixes of {supported}")
    if not _is_supported(url):
        raise UserError(f"input file {url} has an unsupported suffix; supported: {supported}")
    return [url]


def discover_inputs(
    paths: Sequence[str | Path], suffixes: Sequence[str] = (), glob: str | None = None
) -> list[InputFile]:
    """The input files: files as given (in the given order), directories expanded recursively.

    A directory (or URL prefix) contributes its supported files in sorted path order, narrowed
    to ``suffixes`` and ``glob`` when given (files named directly are always read); other
    files in a local directory are passed over (counted in an info log line). A file reached
    twice (named and inside a named directory) is read once, at its first position, with a
    warning.
    """
    files: list[InputFile] = []
    seen: set[InputFile] = set()
    supported = SUPPORTED_TEXT
    keep = _selector(check_suffixes(suffixes), glob)
    for raw in paths:
        chosen: list[InputFile]
        if is_url(raw):
            chosen = _discover_url(raw, supported, keep)
        else:
            path = Path(raw)
            if path.is_dir():
                found = sorted(p for p in path.rglob("*") if p.is_file())
                chosen = [p for p in found if keep(p.name, p.relative_to(path).as_posix())]
                if len(chosen) < len(found):
                    logger.info(
                        "%s: %d files passed over (not a supported suffix%s; supported: %s)",
                        path,
                        len(found) - len(chosen),
                        ", or not selected by --suffix/--glob" if suffixes or glob else "",
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
            key = p if is_url(p) else Path(p).resolve()
            if key in seen:
                logger.warning("%s: given more than once; read once, at its first position", p)
                continue
            seen.add(key)
            files.append(p)
    if not files:
        shown = ", ".join(str(p) for p in paths) or "(none)"
        chose = " selected by --suffix/--glob" if suffixes or glob else ""
        raise UserError(f"no input files with a supported suffix ({supported}){chose} in: {shown}")
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
