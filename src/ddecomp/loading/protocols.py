"""The typed seams between data, loaders and the trainer: what a loader reads, what it hands out.

- :class:`BucketData`: what :class:`~ddecomp.loading.vsl.VSLLoader` and held-out evaluation read
  of a dataset split into buckets: bucket sizes, an identity for the loader state, and the rows of
  an *explicit* epoch (``for_epoch(e).rows(L, idx, out=...)``; a blend rotates the rows behind its
  fractional factors per epoch, so there is no epoch-less ``rows``).
- :class:`DocumentData`: what the baselines read: document bounds and tokens in one token space.
- :class:`TrainData`: both; what ``build_loader`` takes (any method may be asked of it).
- :class:`Batch`: what every loader yields.

:class:`~ddecomp.data.dataset.Dataset` and :class:`~ddecomp.data.blend.Blend` satisfy these
structurally (mypy checks it at the call sites; ``isinstance`` checks that the members exist);
the protocols hold only what loaders and evaluation use. Members are read-only properties so
that plain attributes satisfy them.

This module imports neither torch nor a loader, so :data:`IGNORE_INDEX` is importable anywhere.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, NotRequired, Protocol, TypedDict, runtime_checkable

import numpy as np

from ddecomp.data.tailrows import PackedRows

if TYPE_CHECKING:
    import torch

IGNORE_INDEX = -100
"""A label with this value is not trained on (cross-document labels, padding)."""


@runtime_checkable
class RowSource(Protocol):
    """Rows of one epoch: ``rows(L, idx, out)`` -> ``[len(idx), L + 1]`` token ids of plain
    rows; ``fill(L, idx, out)`` any rows, packed tail rows included (their labels and segment
    starts come back as a :class:`~ddecomp.data.tailrows.PackedRows`, else None)."""

    def rows(
        self, L: int, indices: Sequence[int] | np.ndarray, out: np.ndarray | None = None
    ) -> np.ndarray: ...

    def fill(
        self, L: int, indices: Sequence[int] | np.ndarray, out: np.ndarray
    ) -> PackedRows | None: ...


@runtime_checkable
class BucketData(Protocol):
    """A dataset as buckets of power-of-two-length rows (DD's loader, evaluation)."""

    @property
    def fingerprint(self) -> str: ...

    @property
    def max_len(self) -> int: ...

    @property
    def bucket_rows(self) -> Mapping[int, int]:
        """Rows per bucket length, every length of the range (empty buckets included)."""
        ...

    @property
    def bucket_lengths(self) -> Sequence[int]:
        """Lengths of the non-empty buckets, shortest first."""
        ...

    @property
    def packed_lengths(self) -> Sequence[int]:
        """Bucket lengths that hold packed tail rows (``--tails pack``), served with a mask."""
        ...

    def for_epoch(self, epoch: int) -> RowSource:
        """The rows as served in ``epoch``."""
        ...


@runtime_checkable
class Prefetching(Protocol):
    """Data whose rows are worth asking for early (a dataset in object storage)."""

    @property
    def prefetch_steps(self) -> int:
        """Steps to ask for ahead of the one being built (0: none)."""
        ...

    def prefetch(self, L: int, indices: Sequence[int] | np.ndarray) -> None:
        """Start reading rows ``indices`` of bucket ``L`` in the background."""
        ...


@runtime_checkable
class DocumentData(Protocol):
    """A dataset as documents in one token space (the concat and pack baselines)."""

    @property
    def fingerprint(self) -> str: ...

    @property
    def eos_id(self) -> int: ...

    @property
    def token_base(self) -> np.ndarray:
        """Token offsets where a shard (a separate token array) starts, and the end."""
        ...

    def document_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """``(start, end)`` token offsets of the documents, in training order."""
        ...

    def tokens(self, start: int, end: int) -> np.ndarray:
        """Tokens ``[start, end)`` (within one shard)."""
        ...


@runtime_checkable
class TrainData(BucketData, DocumentData, Protocol):
    """Both views: what the trainer hands to ``build_loader`` for any method."""


class Batch(TypedDict):
    """One rank's batch of one global step.

    ``input_ids`` / ``labels``: int64 ``[rows, seq_len]`` (views of one ``[rows, seq_len + 1]``
    buffer unless labels are masked); ``seq_len``, ``step`` (global step in the epoch),
    ``epoch``. Document-masked baselines add ``cu_seqlens`` (int32, flash-attn varlen layout
    flattened over rows), ``max_seqlen`` and ``position_ids`` (int64 ``[rows, seq_len]``).

    In the ``"flat"`` layout (:mod:`ddecomp.loading.flat`) the same tokens come as ``[1, T]``
    (``T = rows * seq_len``) and ``cu_seqlens`` / ``max_seqlen`` / ``position_ids`` (``[1, T]``)
    are always present: sequences of ``seq_len`` (and any pieces inside them) are marked there.
    ``source`` (DD's loader on a :class:`~ddecomp.data.blend.Blend`): int64 ``[rows]``, each
    row's source index in the blend (its position in ``blend.sources``). One per row also for
    packed tail rows: a tail row packs pieces of one source dataset, never of two.
    """

    input_ids: torch.Tensor
    labels: torch.Tensor
    seq_len: int
    step: int
    epoch: int
    cu_seqlens: NotRequired[torch.Tensor]
    max_seqlen: NotRequired[int]
    position_ids: NotRequired[torch.Tensor]
    source: NotRequired[torch.Tensor]


class DocSegments(TypedDict):
    """What document-masked attention needs (see :class:`Batch`)."""

    cu_seqlens: torch.Tensor
    max_seqlen: int
    position_ids: torch.Tensor
