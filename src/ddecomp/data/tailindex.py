"""A split's packed tail rows (``--tails pack``) loaded from their files and checked.

:func:`load_tail_index` reads every shard's ``starts`` / ``targets`` files of a split (their
headers and sizes checked by :func:`~ddecomp.data.files.read_npy` before anything is allocated),
checks the rows (:func:`~ddecomp.data.tailrows.check_rows`) and each shard's record (pieces, rows,
pieces inside the shard), and moves the starts into the dataset's global token space. A problem
is one line naming the file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ddecomp.data.files import read_npy
from ddecomp.data.tailrows import PAD_START, TAIL_KINDS, TailIndex, check_rows, row_pointers
from ddecomp.errors import DataError


def load_tail_index(
    root: Path, shards: Sequence[Mapping[str, Any]], split: str, token_base: np.ndarray, length: int
) -> TailIndex:
    """A split's tail rows over every shard, in the global token space of ``token_base``, each
    shard's files checked as :func:`check_rows` says and against its record (one line naming
    the file)."""
    s_parts, t_parts = [], []
    for i, sh in enumerate(shards):
        rec = sh["tails"][split]
        n = int(token_base[i + 1] - token_base[i])
        starts, targets = (
            read_npy(root / rec[k]["path"], "int64", rec["entries"]) for k in TAIL_KINDS
        )
        problem = check_rows(starts, targets, length)
        real = starts != PAD_START
        if problem is None and bool((starts[real] + targets[real] + 1 > n).any()):
            problem = f"a piece lies outside its shard's {n} tokens"
        if problem is None and int(real.sum()) != rec["pieces"]:
            problem = f"{int(real.sum())} pieces, the manifest says {rec['pieces']}"
        if problem is None and targets.sum() != rec["rows"] * length:
            problem = f"{int(targets.sum()) // length} rows, the manifest says {rec['rows']}"
        if problem is not None:
            raise DataError(f"{root / rec['starts']['path']}: {problem}")
        s_parts.append(np.where(real, starts + token_base[i], PAD_START))
        t_parts.append(targets)
    z = np.zeros(0, dtype=np.int64)
    all_starts = np.concatenate(s_parts) if s_parts else z
    all_targets = np.concatenate(t_parts) if t_parts else z
    return TailIndex(length, all_starts, all_targets, row_pointers(all_targets, length))
