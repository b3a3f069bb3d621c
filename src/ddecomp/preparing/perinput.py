"""``--source-per-input``: one source per INPUT argument, and the checks that keep them apart.

A dataset prepared from several inputs with ``--source-per-input`` records which input each
shard was read from (``sources = {"names": [...], "shards": [...]}``,
:mod:`ddecomp.data.sources`), so its batches carry a ``source`` per row. That holds only if no
shard mixes inputs (each entry point cuts its shards at input boundaries) and no file belongs to
two inputs, which :func:`discover_groups` and :func:`check_distinct` refuse in one line: a text
file named directly and also inside a named directory, a token file given twice or through a
symlink or hard link (the same device and inode) would otherwise be trained twice and counted
in two sources.

Names (:func:`source_names`) are the inputs' last path components (``a/`` -> ``a``), lengthened
to the shortest suffix of components that tells every input apart (``x/data`` and ``y/data`` ->
``x/data``, ``y/data``). Paths are made absolute without following symlinks: a name is what the
user typed, not where a link points.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ddecomp.errors import UserError
from ddecomp.preparing.inputs import InputFile, discover_inputs, is_url

log = logging.getLogger("ddecomp.preparing.pipeline")  # the run's lines belong to its log


def source_names(paths: Sequence[str | Path]) -> list[str]:
    """One distinct name per input path: the shortest common-length suffix of path components
    that tells them apart; a :class:`UserError` when two inputs are the same path."""
    full = [str(p) if is_url(str(p)) else os.path.abspath(p) for p in paths]
    parts = [tuple(f.rstrip("/").split("/")) for f in full]
    for k in range(1, max(len(x) for x in parts) + 1):
        names = ["/".join(x[-k:]) for x in parts]
        if len(set(names)) == len(names):
            return names
    first = next(i for i, x in enumerate(parts) if parts.count(x) > 1)
    raise UserError(f"input {paths[first]} is given more than once; give each input once")


def check_distinct(paths: Sequence[Path], flag: str) -> None:
    """Refuse one file given twice (the same path, a symlink to it or a hard link: the same
    device and inode): its tokens would be trained twice."""
    seen: dict[tuple[int, int], Path] = {}
    for p in paths:
        st = p.stat()
        key = (st.st_dev, st.st_ino)
        if key in seen:
            raise UserError(
                f"{flag} {p} is the same file as {seen[key]} (given twice, or a link to it); "
                "give each file once"
            )
        seen[key] = p


def discover_groups(
    paths: Sequence[str], suffixes: Sequence[str] = (), glob: str | None = None
) -> list[list[InputFile]]:
    """Each INPUT's files (:func:`~ddecomp.preparing.inputs.discover_inputs` on it alone): one
    source each. An input with no file is refused by discovery, naming it; a file reached from
    two inputs (a file named and inside a named directory) is refused here, naming both."""
    groups = [discover_inputs([p], suffixes, glob) for p in paths]
    owner: dict[object, int] = {}
    for k, group in enumerate(groups):
        for f in group:
            key: object = f if is_url(f) else Path(f).resolve()
            if key in owner:
                raise UserError(
                    f"--source-per-input: {f} is in input {paths[owner[key]]} and in input "
                    f"{paths[k]}; a file belongs to one source: give it through one input only"
                )
            owner[key] = k
    return groups


def sources_record(names: list[str], shard_sources: Sequence[int]) -> dict[str, Any]:
    """The manifest's ``sources``: the names, and each shard's source index. An input that gave
    no document (an empty file, every record skipped) keeps its name and serves no row: said in
    a warning, since its loss will be missing from the per-source metrics."""
    shards = [int(s) for s in shard_sources]
    for k, name in enumerate(names):
        if k not in shards:
            log.warning(
                "--source-per-input: input %s gave no document; its source has no rows", name
            )
    return {"names": names, "shards": shards}
