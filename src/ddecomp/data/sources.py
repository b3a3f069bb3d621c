"""Sources of one dataset prepared from several inputs (``prepare a/ b.jsonl --source-per-input``,
``--from-tokens F1 F2`` or ``--from-megatron P1 P2`` with it): which input each row was read from.

Shards never mix inputs (each input is cut into its own shards,
:mod:`ddecomp.preparing.perinput`), so the manifest
records one source per shard: ``sources = {"names": [...], "shards": [source of shard 0, ...]}``.
A plain row lies inside one shard (its start says which); a packed tail row packs pieces of one
shard (tails are packed per shard and split), so one source per row holds for tail rows too.
"""

from __future__ import annotations

import numpy as np

from ddecomp.data.dataset import Dataset


def dataset_source_names(ds: Dataset) -> list[str] | None:
    """The recorded sources' names, or None for a dataset prepared without them."""
    spec = ds.manifest.get("sources")
    return None if spec is None else [str(n) for n in spec["names"]]


def dataset_row_sources(ds: Dataset, L: int, indices: np.ndarray) -> np.ndarray:
    """The source index of each row ``indices`` of bucket ``L`` (int64)."""
    shard_source = np.asarray(ds.manifest["sources"]["shards"], dtype=np.int64)
    idx = np.asarray(indices, dtype=np.int64)
    first = ds.packed_from.get(L, ds.num_rows(L))
    plain = idx < first
    starts = np.empty(idx.size, dtype=np.int64)
    starts[plain] = ds.row_starts(L)[idx[plain]]
    tail = ds.tail_index
    for i in np.flatnonzero(~plain).tolist():
        assert tail is not None, "rows past the plain ones are tail rows"
        r = int(idx[i]) - first
        starts[i] = int(tail.starts[tail.ptr[r] : tail.ptr[r + 1]].max())  # padding is -1
    shard = np.searchsorted(ds.token_base, starts, side="right") - 1
    out: np.ndarray = shard_source[shard]
    return out


def source_names(data: object) -> list[str] | None:
    """The sources' names of a blend (its datasets, :func:`~ddecomp.data.blendstats.
    source_names`) or of a dataset prepared with sources; None for data without sources."""
    from ddecomp.data.blend import Blend
    from ddecomp.data.blendstats import source_names as blend_names

    if isinstance(data, Blend):
        return blend_names(data)
    return dataset_source_names(data) if isinstance(data, Dataset) else None


def row_sources(data: object, L: int, indices: np.ndarray, epoch: int) -> np.ndarray | None:
    """Each row's source index (rows ``indices`` of bucket ``L`` as served in ``epoch``): for a
    blend its dataset's position, for a dataset prepared with sources the recorded one; None
    for data without sources."""
    from ddecomp.data.blend import Blend

    if isinstance(data, Blend):
        return data.source_rows(L, indices, epoch)[0]
    if isinstance(data, Dataset) and "sources" in data.manifest:
        return dataset_row_sources(data, L, indices)
    return None
