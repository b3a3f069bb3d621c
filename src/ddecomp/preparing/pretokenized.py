"""Already-tokenized input: a flat token array with EOS after each document.

``--in-place`` (:func:`in_place_reference`) indexes the file where it is: no token is copied,
the manifest's ``tokens_file`` names it (absolute path, size, header) and each shard's token
record its byte offset and the sha256 of its range, so ``verify`` checks the file and opening a
dataset whose file moved or changed (size, ``mtime_ns``, inode, ``.npy`` header) is a one-line
error naming it. A big-endian ``.npy`` is read in its byte order when copied and refused in place.
Several files in one dataset (``tokens_files``) are :mod:`ddecomp.preparing.fromtokens`'s.

Accepted as written by Megatron, OLMo-core and nanoGPT pipelines: a raw little-endian integer
file (``--dtype``, default uint16), a ``.npy`` array, or (from Python) an in-memory array. It is
memory-mapped, never loaded whole; shards are ranges cut just after an EOS, so every document is
inside one shard and workers read their range independently.
"""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path

import numpy as np

from ddecomp.errors import UserError


def open_token_source(
    source: str | Path | np.ndarray, dtype: str | None
) -> tuple[Path | np.ndarray, np.ndarray, int, str]:
    """(job source, a readable view of all tokens, header bytes, identity string)."""
    if isinstance(source, np.ndarray):
        if source.ndim != 1:
            raise UserError(f"tokens must be a 1-D array, got shape {source.shape}")
        return (
            source,
            source,
            0,
            f"array:{source.dtype.name}:{source.size}:"
            + hashlib.sha256(np.ascontiguousarray(source).data).hexdigest(),
        )
    path = Path(source)
    if not path.is_file():
        raise UserError(f"--from-tokens {path}: no such file")
    try:
        if path.suffix == ".npy":
            arr = np.load(path, mmap_mode="r")
            if arr.ndim != 1:
                raise UserError(
                    f"--from-tokens {path}: expected a 1-D array, got shape {arr.shape}"
                )
            header = int(arr.offset) if isinstance(arr, np.memmap) else 0
            dt = arr.dtype
        else:
            dt = np.dtype(dtype or "uint16")
            size = path.stat().st_size
            if size % dt.itemsize:
                raise UserError(
                    f"--from-tokens {path}: {size} bytes is not a whole number of {dt.name} "
                    "tokens; check --dtype"
                )
            arr = np.memmap(path, dtype=dt, mode="r") if size else np.zeros(0, dt)
            header = 0
    except (OSError, ValueError) as e:
        raise UserError(f"--from-tokens {path}: cannot read ({e})") from e
    if dt.kind not in "ui":
        raise UserError(f"--from-tokens {path}: dtype {dt.name} is not an integer type")
    ident = f"{path.resolve()}:{path.stat().st_size}:{dt.name}"
    return path, arr, header, ident


def token_ranges(arr: np.ndarray, eos_id: int, shard_tokens: int) -> list[tuple[int, int]]:
    """Cut ``[0, n)`` into ranges of about ``shard_tokens`` tokens, each ending after an EOS."""
    n = arr.size
    cuts = [0]
    while n - cuts[-1] > shard_tokens:
        lo = cuts[-1] + shard_tokens
        nxt = np.flatnonzero(arr[lo : lo + (1 << 22)] == eos_id)
        while nxt.size == 0 and lo < n:  # a document longer than the probe window
            lo += 1 << 22
            nxt = np.flatnonzero(arr[lo : lo + (1 << 22)] == eos_id)
        if nxt.size == 0:
            break
        cuts.append(lo + int(nxt[0]) + 1)
    if cuts[-1] != n:
        cuts.append(n)
    return list(itertools.pairwise(cuts))


IN_PLACE_DTYPES = ("uint16", "uint32")  # the dataset's token dtypes: read as they are


def in_place_reference(
    src: Path | np.ndarray, arr: np.ndarray, header: int, remote: str | None
) -> dict[str, object]:
    """The manifest's ``tokens_file`` for ``--in-place``; refuses inputs it cannot reference."""
    if isinstance(src, np.ndarray):
        raise UserError("in_place needs a token file, not an in-memory array")
    if remote is not None:
        raise UserError("--in-place references a local file; it cannot go with --out URL")
    if not arr.dtype.isnative:
        raise UserError(
            f"--from-tokens {src}: big-endian {arr.dtype.name} ({arr.dtype.str}); --in-place "
            "reads the file as the dataset's little-endian tokens: drop --in-place to copy it "
            "(converted)"
        )
    if arr.dtype.name not in IN_PLACE_DTYPES:
        raise UserError(
            f"--from-tokens {src}: --in-place reads the file as the dataset's tokens, which are "
            f"{' or '.join(IN_PLACE_DTYPES)}; this one is {arr.dtype.name}: drop --in-place to "
            "copy it"
        )
    return file_reference(src, header, arr.dtype.name)


def file_reference(src: Path, header: int, dtype: str) -> dict[str, object]:
    """What a dataset records of a file it indexes in place: absolute path, size, header bytes,
    dtype, and what tells an edit of the same size (``mtime_ns``, inode, the header's sha256),
    which opening checks (:mod:`ddecomp.data.tokenfile`)."""
    st = src.stat()
    ref: dict[str, object] = {
        "path": str(src.resolve()),
        "bytes": st.st_size,
        "header": header,
        "dtype": dtype,
        "mtime_ns": st.st_mtime_ns,
        "inode": st.st_ino,
    }
    if header:
        with open(src, "rb") as fh:
            ref["header_sha256"] = hashlib.sha256(fh.read(header)).hexdigest()
    return ref
