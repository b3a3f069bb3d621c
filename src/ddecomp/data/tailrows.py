"""Packed tail rows (``prepare --tails pack``) as a reader sees them: index, checks, gather.

A tail row of ``T`` positions holds whole pieces of documents back to back, then padding
(:mod:`ddecomp.preparing.tails` writes them). Stored per split as two int64 arrays, the pieces row
by row: ``starts`` (a piece of ``l`` targets is ``tokens[s : s + l + 1]``; :data:`PAD_START` for
the padding that closes a row) and ``targets`` (``l``). Every row sums to exactly ``T``, so row
``r`` is the pieces whose running sum lies in ``[r T, (r + 1) T)`` (:func:`row_pointers`).

Served rows (:func:`fill_packed`): position ``p`` of a piece at ``s`` has input ``tokens[s + p]``
and label ``tokens[s + p + 1]``: a piece of ``l`` targets takes ``l`` positions, so a row trains
``T - padding`` targets. Padding inputs are EOS with label :data:`IGNORE_LABEL` and form the
row's last segment; a row's segment starts give the document mask (``cu_seqlens`` and
``position_ids``, built by the loader), so attention never crosses a piece.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol

import numpy as np

from ddecomp.decompose import TAIL_POLICIES, is_power_of_two

PAD_START = -1  # the start of a padding piece: no token, labels ignored
IGNORE_LABEL = -100  # = ddecomp.loading.protocols.IGNORE_INDEX (tested equal; no import upward)
TAIL_KINDS = ("starts", "targets")  # the two files of a split's packed tail rows
SHARD_DIR = "shards"  # = ddecomp.data.layout.SHARD_DIR (layout imports this module)


def tail_file(shard: str, split: str, kind: str) -> str:
    """``shards/NNNNN.{split}.tail.{kind}.npy``, kind in :data:`TAIL_KINDS`."""
    assert kind in TAIL_KINDS, kind
    return f"{SHARD_DIR}/{shard}.{split}.tail.{kind}.npy"


def tail_policy(man: Mapping[str, Any]) -> tuple[str, int | None]:
    """``(policy, tail row length)`` of a checked manifest: ``("drop", None)`` when it has no
    ``tails`` (a dataset prepared before ``--tails`` existed dropped them)."""
    tails = man.get("tails")
    if tails is None or tails["policy"] == "drop":
        return "drop", None
    return "pack", int(tails["length"])


@dataclass(frozen=True)
class TailIndex:
    """One split's tail rows: pieces with global starts (``PAD_START`` kept) and row pointers."""

    length: int
    starts: np.ndarray
    targets: np.ndarray
    ptr: np.ndarray

    @property
    def rows(self) -> int:
        return int(self.ptr.size - 1)


@dataclass(frozen=True)
class PackedRows:
    """What :meth:`~ddecomp.data.dataset.Dataset.fill` adds for a request with packed rows:
    ``labels`` int64 ``[n, L]`` of every requested row (:data:`IGNORE_LABEL` on padding) and
    per row the positions in ``(0, L)`` where a new segment (piece or padding) begins."""

    labels: np.ndarray
    segments: list[np.ndarray]


def row_pointers(targets: np.ndarray, length: int) -> np.ndarray:
    """Fenceposts ``[rows + 1]`` into the pieces: row ``r`` is pieces ``ptr[r]:ptr[r+1]``.

    Assumes (as :func:`check_rows` verifies) that every row's pieces sum to ``length``."""
    ends = np.cumsum(np.asarray(targets, dtype=np.int64))
    rows = int(ends[-1]) // length if ends.size else 0
    ptr = np.searchsorted(ends, np.arange(rows + 1, dtype=np.int64) * length, side="right")
    return ptr.astype(np.int64)


def check_rows(starts: np.ndarray, targets: np.ndarray, length: int) -> str | None:
    """What is wrong with stored tail pieces, or None: every count in ``[1, length]``, rows of
    exactly ``length`` (no piece across a row end), padding only at the end of a row."""
    if starts.size != targets.size:
        return f"{starts.size} starts but {targets.size} target counts"
    if targets.size == 0:
        return None
    if int(targets.min()) < 1 or int(targets.max()) > length:
        return f"a piece has a target count outside [1, {length}]"
    ends = np.cumsum(targets)
    begins = ends - targets
    if int(ends[-1]) % length:
        return f"the pieces' {int(ends[-1])} positions are not whole rows of {length}"
    if bool(((begins // length) != ((ends - 1) // length)).any()):
        return f"a piece crosses the end of a row of {length}"
    pad = starts == PAD_START
    if bool((pad & (ends % length != 0)).any()):
        return "a padding piece is not at the end of its row"
    if bool(((starts < 0) & ~pad).any()):
        return "a piece starts at a negative offset"
    return None


def fill_packed(
    index: TailIndex,
    rows: np.ndarray,
    read: Callable[[int, int], np.ndarray],
    out: np.ndarray,
    labels: np.ndarray,
    pad_id: int,
) -> list[np.ndarray]:
    """Write tail rows ``rows`` into ``out [n, L + 1]`` (inputs; the last column EOS) and
    ``labels [n, L]``; return each row's segment starts. ``read(a, b)`` is tokens ``[a, b)``."""
    segs: list[np.ndarray] = []
    for i, r in enumerate(rows.tolist()):
        lo, hi = int(index.ptr[r]), int(index.ptr[r + 1])
        at, starts = 0, []
        for s, n in zip(index.starts[lo:hi].tolist(), index.targets[lo:hi].tolist(), strict=True):
            if at:
                starts.append(at)
            if s == PAD_START:
                out[i, at : at + n] = pad_id
                labels[i, at : at + n] = IGNORE_LABEL
            else:
                tok = read(s, s + n + 1)
                out[i, at : at + n] = tok[:-1]
                labels[i, at : at + n] = tok[1:]
            at += n
        assert at == index.length, "a tail row sums to its length (check_rows)"
        out[i, -1] = pad_id
        segs.append(np.asarray(starts, dtype=np.int64))
    return segs


# ---- the manifest's tail fields (called by ddecomp.data.layout.check_manifest) -----------------
class Fields(Protocol):
    """The typed reads of :class:`ddecomp.data.layout._Fields` that the checks below use."""

    def fail(self, at: str, problem: str) -> NoReturn: ...
    def get(self, node: Mapping[str, Any], key: str, at: str, kind: type) -> Any: ...
    def mapping(self, node: Mapping[str, Any], key: str, at: str = "") -> dict[str, Any]: ...
    def integer(
        self, node: Mapping[str, Any], key: str, at: str = "", lo: int = 0, hi: int = 1 << 62
    ) -> int: ...
    def record(self, node: Mapping[str, Any], key: str, at: str, path: str) -> dict[str, Any]: ...


def check_tails(f: Fields, man: Mapping[str, Any], min_len: int) -> int | None:
    """The tail row length of a ``pack`` manifest, else None (no ``tails``: ``drop``)."""
    tails = f.mapping(man, "tails") if "tails" in man else {"policy": "drop"}
    policy = f.get(tails, "policy", "tails", str)
    if policy not in TAIL_POLICIES:
        f.fail("tails.policy", f"= {policy!r} is not one of {', '.join(TAIL_POLICIES)}")
    length = None if policy == "drop" else f.integer(tails, "length", "tails", lo=1, hi=min_len)
    if length is not None and not is_power_of_two(length):
        f.fail("tails.length", f"= {length} is not a power of two")
    return length


def check_tail_bucket(f: Fields, rec: Mapping[str, Any], at: str, length: int | None) -> None:
    """A split's ``tail_bucket`` summary (``pack`` only)."""
    if length is None:
        return
    tb = f.mapping(rec, "tail_bucket", at)
    for key in ("rows", "pieces", "targets", "padding"):
        f.integer(tb, key, f"{at}.tail_bucket")
    f.integer(tb, "length", f"{at}.tail_bucket", lo=length, hi=length)


def check_shard_tails(
    f: Fields, sh: Mapping[str, Any], at: str, shard: str, length: int | None
) -> None:
    """A shard's ``tails`` records: present exactly when the policy is ``pack``."""
    if length is None:
        if "tails" in sh:
            f.fail(f"{at}.tails", "is present but the manifest's tails policy is drop")
        return
    for split in ("train", "val"):
        t = f.mapping(f.mapping(sh, "tails", at), split, f"{at}.tails")
        for key in ("rows", "pieces", "padding", "entries"):
            f.integer(t, key, f"{at}.tails.{split}")
        for kind in TAIL_KINDS:
            f.record(t, kind, f"{at}.tails.{split}", tail_file(shard, split, kind))
