"""``prepare --tails pack``: the pieces decomposition drops, packed into rows of ``tail_len``.

Decomposition keeps power-of-two pieces of ``min`` targets or more; what is left of a document
(a short document whole, or the tail of a kept one, :attr:`~ddecomp.decompose.Decomposition.
tail_starts`) is a piece of ``1 <= l < min`` targets. With ``--tails pack`` those pieces are
packed into *tail rows* of ``T = tail_len`` positions (a power of two ``<= min``; default ``min``):

- a piece longer than ``T`` (only when ``T < min``) is first cut into pieces of ``T`` targets
  and a last one, overlapping by one token as every row does (no target lost at the cut);
- pieces are packed best-fit decreasing (:func:`best_fit_decreasing`), the ties between equal
  sizes broken by a seeded permutation (``default_rng([seed, shard, 3, split])``);
- position ``p`` of a row is an input token and its label: a piece of ``l`` targets starting at
  token ``s`` takes ``l`` positions with inputs ``tokens[s : s + l]`` and labels
  ``tokens[s + 1 : s + l + 1]``, so a packed piece costs exactly its targets, no boundary
  position is lost; the positions a row leaves over are padding (label ignored).

On disk (``NNNNN.{split}.tail.starts.npy`` and ``.targets.npy``, int64, shard-local starts) a
row is its pieces in order *followed by its padding as a piece of start* ``-1``, so every row
sums to exactly ``T`` targets and row ``r`` is the pieces whose running sum lies in
``[r T, (r + 1) T)``: two flat arrays, no row index to keep consistent.

BFD here, as in the ``pack`` baseline (:mod:`ddecomp.loading.pack`), places all pieces of one
size together: a bin with ``c`` positions left takes ``c // size`` of them in a row, exactly
what one-at-a-time BFD does. Python work is one step per (bin, size) touch plus O(T) numpy per
distinct size. Sizes are below ``T``, so BFD leaves at most one bin per size class under
half full: padding is a few rows per shard (measured share in the README and the manifest).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ddecomp.binpack import best_fit_decreasing
from ddecomp.data.tailrows import PAD_START


@dataclass(frozen=True)
class TailRows:
    """Packed tail rows of one split of one shard (see the module docstring).

    ``starts`` / ``targets``: the pieces row by row, each row closed by a padding piece
    (start :data:`PAD_START`) unless full; ``rows``: the number of rows of ``length`` positions;
    ``pieces`` and ``padding``: data pieces and padding positions (``rows * length = data
    targets + padding``)."""

    length: int
    starts: np.ndarray
    targets: np.ndarray
    rows: int
    pieces: int
    padding: int

    @property
    def data_targets(self) -> int:
        return int(self.targets[self.starts != PAD_START].sum())


def cut_pieces(
    starts: np.ndarray, targets: np.ndarray, length: int
) -> tuple[np.ndarray, np.ndarray]:
    """Cut pieces of more than ``length`` targets into ``length``-target pieces and a last one
    (consecutive pieces share one token, so every target stays in exactly one piece)."""
    starts = np.asarray(starts, dtype=np.int64)
    targets = np.asarray(targets, dtype=np.int64)
    count = -(-targets // length)
    j = np.arange(int(count.sum()), dtype=np.int64) - np.repeat(np.cumsum(count) - count, count)
    piece = np.repeat(np.arange(targets.size), count)
    out_s = starts[piece] + j * length
    out_l = np.minimum(targets[piece] - j * length, length)
    return out_s, out_l


def pack_tails(
    starts: np.ndarray, targets: np.ndarray, length: int, rng: np.random.Generator
) -> TailRows:
    """Pack pieces (``targets >= 1``) into rows of ``length`` positions (module docstring)."""
    s, t = cut_pieces(starts, targets, length)
    assert t.size == 0 or int(t.min()) >= 1, "a tail piece has at least one target"
    perm = rng.permutation(t.size)  # seeded ties between equal sizes
    s, t = s[perm], t[perm]
    bins, nbins = best_fit_decreasing(t, length)
    order = np.lexsort((-t, bins))  # a row's pieces together, largest first
    s, t, bins = s[order], t[order], bins[order]
    used = np.bincount(bins, weights=t, minlength=nbins).astype(np.int64)
    pad = length - used
    # Append one padding piece after the last piece of every row that is not full.
    last = np.searchsorted(bins, np.arange(nbins), side="right")  # one past each row's pieces
    need = pad > 0
    at = last[need]
    out_s = np.insert(s, at, PAD_START)
    out_t = np.insert(t, at, pad[need])
    return TailRows(
        length=length,
        starts=out_s.astype(np.int64, copy=False),
        targets=out_t.astype(np.int64, copy=False),
        rows=nbins,
        pieces=int(t.size),
        padding=int(pad.sum()),
    )
