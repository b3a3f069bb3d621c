"""Where a shard's tokens are: its own ``tokens.bin``, or a range of an ``--in-place`` file.

A dataset prepared ``--in-place`` holds no token file: its manifest's ``tokens_file`` names the
input file (absolute path, size, header bytes, dtype) and each shard's token record the byte
``offset`` of its range there (and the range's sha256, which ``verify`` checks). Both kinds are
read here through one memory map, so the readers never tell them apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ddecomp.errors import DataError


def token_file(man: Mapping[str, Any]) -> Path | None:
    """The token file an ``--in-place`` dataset indexes, checked present with its recorded size
    (a :class:`DataError` naming it otherwise); None for a dataset that holds its tokens."""
    tf = man.get("tokens_file")
    if tf is None:
        return None
    path = Path(tf["path"])
    try:
        size = path.stat().st_size
    except OSError:
        raise DataError(
            f"{path}: the token file this dataset indexes in place is missing "
            "(moved or deleted?); put it back or prepare again"
        ) from None
    if size != tf["bytes"]:
        raise DataError(
            f"{path}: {size} bytes, the dataset indexed {tf['bytes']} in place "
            "(the file changed); prepare again"
        )
    return path


def token_array(root: Path, man: Mapping[str, Any], shard: Mapping[str, Any]) -> np.ndarray:
    """A shard's tokens, memory-mapped read-only (from ``tokens_file`` for an in-place one)."""
    rec = shard["files"]["tokens"]
    dtype = np.dtype(man["dtype"])
    n = rec["bytes"] // dtype.itemsize
    if n == 0:  # np.memmap refuses empty files
        return np.zeros(0, dtype=dtype)
    if "offset" in rec:
        path, offset = Path(man["tokens_file"]["path"]), int(rec["offset"])
    else:
        path, offset = root / rec["path"], 0
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=(n,)).view(np.ndarray)
