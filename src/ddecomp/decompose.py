"""Decomposition of documents into power-of-two pieces (pure functions, no I/O).

The convention (recorded in every manifest as :data:`CONVENTION`): a document of ``n`` tokens
(EOS included) has ``m = n - 1`` next-token targets. ``m`` is written in binary, capped at the
maximum: ``m = q * max + r`` gives ``q`` pieces of ``max`` targets, then one piece per set bit of
``r`` from the highest down to ``min``; the bits of ``r`` below ``min`` are the dropped *tail*.
Pieces are laid out largest first from the document start. A piece of ``L`` targets is the row
``tokens[s : s + L + 1]`` and the next piece of the same document starts at ``s + L``: rows overlap
by one token, so ``inputs = row[:-1]``, ``labels = row[1:]`` trains every kept target exactly once
and no target is lost at a piece boundary.

Example (min 8, max 2048): ``n = 2201`` tokens -> ``m = 2200 = 2048 + 128 + 16 + 8`` -> pieces
``[2048, 128, 16, 8]`` starting at token 0, 2048, 2176, 2192 of the document.

:func:`decompose_corpus` is the corpus-wide version: a handful of numpy passes over the array of
document lengths, one per bucket, so per-document cost is a few nanoseconds (no Python loop per
document). Row starts come out sorted, i.e. in document order.

Tails: :attr:`Decomposition.tail_starts` / :attr:`Decomposition.tail_targets` name every piece
below ``min`` (the whole of a short document, or the tail of a kept one: the bits of ``r`` below
``min``, which sit at the document's end) in the same convention (row ``tokens[s : s + l + 1]``),
so ``prepare --tails pack`` can keep them (:mod:`ddecomp.preparing.tails`); ``--tails drop``
ignores them. A document of one token has no target and no piece.

Long documents: ``"spread"`` (:data:`DEFAULT_LONG_DOCS`, what ``ddecomp prepare`` does unless
told otherwise) follows the paper's reference release (its ``make_dd_buckets.py`` with
``randomize=True``): while at least ``2 * max`` targets remain, a piece of random length ``2^k``
(``min <= 2^k <= max``) is cut with probability proportional to ``2^-k``, so every bucket receives
the same expected number of tokens from long documents; the remainder (``max <= rest < 2 * max``)
is split greedily as above. It is seeded through the ``rng`` argument. ``"split"`` (OLMo-core's
``capped_powers_of_2``) cuts long documents into ``max`` pieces; it is :func:`decompose_corpus`'s
default because it needs no ``rng``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from ddecomp.errors import UserError

LONG_DOC_POLICIES: tuple[str, ...] = ("split", "spread")
DEFAULT_LONG_DOCS = "spread"  # the reference release's default; "split" is OLMo-core's
TAIL_POLICIES: tuple[str, ...] = ("drop", "pack")
MAX_LEN_LIMIT = 1 << 20

CONVENTION = {
    "name": "binary-targets-overlap1",
    "targets_per_document": "n_tokens - 1",
    "row_tokens": "L + 1",
    "overlap_tokens": 1,
    "order": "largest piece first from the document start",
    "description": (
        "A document of n tokens has n-1 next-token targets; n-1 is decomposed in binary (pieces "
        "above max cut into max pieces, bits below min dropped as the tail). A piece of L targets "
        "is a row of L+1 tokens that shares its last token with the next piece of the same "
        "document; inputs = row[:-1], labels = row[1:]."
    ),
}


def is_power_of_two(x: int) -> bool:
    return x > 0 and x & (x - 1) == 0


def check_lengths(min_len: int, max_len: int) -> None:
    """Raise :class:`UserError` unless ``1 <= min_len <= max_len <= 2^20``, both powers of two."""
    for name, v in (("--min-len", min_len), ("--max-len", max_len)):
        if not isinstance(v, int | np.integer) or not is_power_of_two(int(v)):
            raise UserError(f"{name} {v} is not a power of two; use e.g. 64, 256, 8192")
    if min_len > max_len:
        raise UserError(f"--min-len {min_len} is larger than --max-len {max_len}")
    if max_len > MAX_LEN_LIMIT:
        raise UserError(f"--max-len {max_len} is above the limit {MAX_LEN_LIMIT} (2^20)")


def check_long_docs(long_docs: str) -> None:
    """Raise :class:`UserError` unless ``long_docs`` is one of :data:`LONG_DOC_POLICIES`."""
    if long_docs not in LONG_DOC_POLICIES:
        raise UserError(f"--long-docs {long_docs!r} is not one of {', '.join(LONG_DOC_POLICIES)}")


def long_docs_of(manifest: Mapping[str, object]) -> str:
    """The long-document policy a dataset was prepared with: its manifest's ``long_docs``, or
    ``"unknown"`` when the manifest does not record one (nothing is guessed)."""
    got = manifest.get("long_docs")
    return got if isinstance(got, str) and got in LONG_DOC_POLICIES else "unknown"


def describe_long_docs(policy: str) -> str:
    """``policy`` with what it means, for ``ddecomp stats`` and ``ddecomp plan``."""
    return {
        "spread": "spread (random lengths, P(2^k) ~ 2^-k: the paper's release)",
        "split": "split (max-length pieces: OLMo-core's)",
    }.get(policy, f"{policy} (not recorded in the manifest)")


def check_tails(tails: str, tail_len: int | None, min_len: int) -> None:
    """Raise :class:`UserError` unless ``tails`` is a policy of :data:`TAIL_POLICIES` and
    ``tail_len`` (``pack`` only; None means ``min_len``) is a power of two ``<= min_len``."""
    if tails not in TAIL_POLICIES:
        raise UserError(f"--tails {tails!r} is not one of {', '.join(TAIL_POLICIES)}")
    if tail_len is None:
        return
    if tails != "pack":
        raise UserError(f"--tail-len {tail_len} needs --tails pack (tails are dropped)")
    if not isinstance(tail_len, int | np.integer) or not is_power_of_two(int(tail_len)):
        raise UserError(f"--tail-len {tail_len} is not a power of two; use e.g. 64 or 256")
    if tail_len > min_len:
        raise UserError(
            f"--tail-len {tail_len} is above --min-len {min_len}; use {min_len} or less"
        )


def bucket_lengths_for(min_len: int, max_len: int) -> list[int]:
    """All bucket lengths ``min_len, 2*min_len, ..., max_len``."""
    return [1 << k for k in range(min_len.bit_length() - 1, max_len.bit_length())]


def decompose(n_tokens: int, min_len: int = 256, max_len: int = 8192) -> list[int]:
    """Target counts ``L`` of the pieces of one document of ``n_tokens`` tokens, in document order.

    >>> decompose(2201, 8, 2048)
    [2048, 128, 16, 8]
    >>> decompose(5, 8, 2048)  # fewer than 8 targets: nothing kept
    []
    """
    check_lengths(min_len, max_len)
    if n_tokens < 0:
        raise ValueError(f"n_tokens must be >= 0, got {n_tokens}")
    m = max(n_tokens - 1, 0)
    q, r = divmod(m, max_len)
    pieces = [max_len] * q
    bit = max_len >> 1
    while bit >= min_len:
        if r & bit:
            pieces.append(bit)
        bit >>= 1
    return pieces


@dataclass(frozen=True)
class Decomposition:
    """Result of :func:`decompose_corpus` for one token array.

    ``buckets[L]`` holds the start offsets (int64, ascending) of the rows of ``L`` targets, i.e.
    ``tokens[s : s + L + 1]``. Drops are in tokens: a document shorter than ``min + 1`` tokens loses
    all ``n`` of its tokens; a kept document loses ``m - sum(L)`` tail tokens (the tail's targets).
    What those drops are, as pieces: ``tail_starts`` (int64, ascending) and ``tail_targets``
    (``1 <= l < min``), piece ``i`` being the row ``tokens[s : s + l + 1]``; their targets add up to
    the tail tokens plus the short documents' targets.
    """

    buckets: dict[int, np.ndarray]
    short_documents: int
    short_document_tokens: int
    tail_tokens: int
    kept_targets: int
    tail_starts: np.ndarray = field(default_factory=lambda: _empty())
    tail_targets: np.ndarray = field(default_factory=lambda: _empty())


def _empty() -> np.ndarray:
    return np.zeros(0, dtype=np.int64)


def _segmented_arange(counts: np.ndarray) -> np.ndarray:
    """``concat([arange(c) for c in counts])`` without a Python loop."""
    total = int(counts.sum())
    if total == 0:
        return _empty()
    ends = np.cumsum(counts)
    return np.arange(total, dtype=np.int64) - np.repeat(ends - counts, counts)


def _spread(
    starts: np.ndarray, m: np.ndarray, min_len: int, max_len: int, rng: np.random.Generator
) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray, np.ndarray]:
    """Random pieces for documents with ``m >= 2 * max`` targets.

    Returns (piece starts, piece lengths) chunks and the new start and remaining targets of every
    input document. Pieces are drawn in blocks of 64 per document so a 10M-token document takes a
    few hundred vectorized rounds, not one round per piece.
    """
    lens_table = np.array(bucket_lengths_for(min_len, max_len), dtype=np.int64)
    probs = min_len / lens_table  # 2^-k up to a constant: exact powers of two
    probs /= probs.sum()
    pos = starts.copy()
    rem = m.copy()
    out_s: list[np.ndarray] = []
    out_l: list[np.ndarray] = []
    active = np.flatnonzero(rem >= 2 * max_len)
    block = 64
    while active.size:
        draws = lens_table[rng.choice(lens_table.size, size=(active.size, block), p=probs)]
        before = np.cumsum(draws, axis=1) - draws
        take = (rem[active, None] - before) >= 2 * max_len  # a prefix of each row
        take_n = take.sum(axis=1)
        rows = np.repeat(active, take_n)
        out_s.append(pos[rows] + before[take])
        out_l.append(draws[take])
        used = np.where(take, draws, 0).sum(axis=1)
        pos[active] += used
        rem[active] -= used
        active = active[rem[active] >= 2 * max_len]
    return out_s, out_l, pos, rem


def decompose_corpus(
    doc_starts: np.ndarray,
    doc_lengths: np.ndarray,
    min_len: int,
    max_len: int,
    long_docs: str = "split",
    rng: np.random.Generator | None = None,
) -> Decomposition:
    """Decompose every document ``tokens[doc_starts[i] : doc_starts[i] + doc_lengths[i]]``.

    Vectorized over documents: per bucket one masked pass over the arrays, so the work is
    ``O(#docs * #buckets)`` numpy element operations plus the output rows.
    """
    check_lengths(min_len, max_len)
    check_long_docs(long_docs)
    starts = np.asarray(doc_starts, dtype=np.int64)
    lengths = np.asarray(doc_lengths, dtype=np.int64)
    assert starts.shape == lengths.shape, "starts and lengths differ in shape"
    assert lengths.size == 0 or int(lengths.min()) >= 1, "documents have at least one token"
    kmax = max_len.bit_length() - 1
    m = lengths - 1
    pieces_s: list[np.ndarray] = []
    pieces_l: list[np.ndarray] = []
    if long_docs == "spread":
        if rng is None:
            raise ValueError("long_docs='spread' needs an rng")
        pieces_s, pieces_l, starts, m = _spread(starts, m, min_len, max_len, rng)
    q = m >> kmax
    r = m & (max_len - 1)
    kept_r = r & ~np.int64(min_len - 1)
    short = (q == 0) & (kept_r == 0)
    buckets: dict[int, np.ndarray] = {}
    maxrows = np.repeat(starts, q) + _segmented_arange(q) * max_len
    buckets[max_len] = maxrows
    base = starts + (q << kmax)
    for L in bucket_lengths_for(min_len, max_len // 2):
        sel = (kept_r & L) != 0
        buckets[L] = base[sel] + (kept_r[sel] & ~np.int64(2 * L - 1))
    if pieces_s:
        ps = np.concatenate(pieces_s)
        pl = np.concatenate(pieces_l)
        for L_ in list(buckets):
            extra = ps[pl == L_]
            if extra.size:
                buckets[L_] = np.sort(np.concatenate([buckets[L_], extra]), kind="stable")
    # The tail: the bits of r below min, at the end of the document (after every kept piece).
    low = r - kept_r
    has_tail = low > 0
    short_tokens = int(lengths[short].sum())
    tail = int((r - kept_r)[~short].sum())
    kept = int(lengths.sum()) - lengths.size - tail - (short_tokens - int(short.sum()))
    return Decomposition(
        buckets={L_: buckets[L_] for L_ in sorted(buckets)},
        short_documents=int(short.sum()),
        short_document_tokens=short_tokens,
        tail_tokens=tail,
        kept_targets=kept,
        tail_starts=(base + kept_r)[has_tail].astype(np.int64, copy=False),
        tail_targets=low[has_tail].astype(np.int64, copy=False),
    )
