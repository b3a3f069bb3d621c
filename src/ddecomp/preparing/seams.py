"""Cutting a very long document where its tokens do not change, so it encodes in bounded memory.

HF's encoder holds ~300-400 bytes per token of a text while it encodes it (offsets, word ids,
pre-token splits): a 45 MB document took 4.5 GB, a 200 MB one more than the machine had. A long
text is therefore encoded in pieces of at most about ``max_chars`` characters, and the pieces'
ids concatenated. That is only correct at a *seam*: a position ``p`` where
``encode(text) == encode(text[:p]) + encode(text[p:])``.

Candidates are positions just before a whitespace run that follows a non-space character: in
the usual regex pre-tokenizers (GPT-2, Llama-3, ...) a pre-token never spans them, and matching
restarts at ``p`` in the same way whether or not the text before ``p`` is present. That is not
true of every tokenizer (a pre-token of punctuation + newlines, a normalizer that strips, a
``Metaspace`` that prepends ``▁`` at the start of every input), so each candidate is *verified*:
``window`` characters on each side are encoded together and apart, and the seam is taken only
if the ids are identical. A tokenizer that fails every check gets no seam, and its document is
encoded whole as before (correct, not bounded). Up to :data:`_TRIES` candidates are tried per
cut, from the end of the allowed range backwards; if none holds, the range moves on by half a
piece, so a piece may exceed ``max_chars`` where the text has no seam for that long.
"""

from __future__ import annotations

import re
from collections.abc import Callable

_CANDIDATE = re.compile(r"(?<=\S)\s")  # a whitespace character after a non-space one
_TRIES = 64  # candidates verified per cut before the search range moves on
_SCAN = 4096  # characters scanned for candidates at a time, from the end of the range back

Encode = Callable[[str], list[int]]


def _verified(encode: Encode | None, text: str, p: int, start: int, window: int) -> bool:
    if encode is None:
        return True
    a, b = max(start, p - window), min(len(text), p + window)
    return encode(text[a:b]) == encode(text[a:p]) + encode(text[p:b])


def _seam(
    encode: Encode | None, text: str, lo: int, hi: int, start: int, window: int
) -> int | None:
    """The last verified seam in ``(lo, hi]``, trying at most :data:`_TRIES` candidates."""
    tries = 0
    end = hi + 1
    while end > lo + 1 and tries < _TRIES:
        begin = max(lo + 1, end - _SCAN)
        found = [m.start() for m in _CANDIDATE.finditer(text, begin, end)]
        for p in reversed(found):
            if _verified(encode, text, p, start, window):
                return p
            tries += 1
            if tries == _TRIES:
                break
        end = begin
    return None


def cut_points(encode: Encode | None, text: str, max_chars: int, window: int = 512) -> list[int]:
    """Verified seams cutting ``text`` into pieces of about ``max_chars`` characters or fewer.

    ``encode`` maps a text to its ids exactly as the caller will encode the pieces (same
    tokenizer, same special-token handling). Returns the cut positions, increasing; ``[]`` for
    a text of at most ``max_chars`` or one without a verified seam. ``encode=None`` takes every
    candidate unverified: exact for the GPT-2 byte-level pre-tokenizer itself (BPE training
    counts the same pre-tokens), not for a tokenizer in general.
    """
    assert max_chars >= 2, max_chars
    window = max(1, min(window, max_chars // 4))
    cuts: list[int] = []
    start = 0
    n = len(text)
    while n - start > max_chars:
        lo, hi = start + max_chars // 2, start + max_chars
        cut = None
        while cut is None and lo < n - 1:
            cut = _seam(encode, text, lo, min(hi, n - 1), start, window)
            lo, hi = hi, hi + max_chars // 2
        if cut is None:
            break
        cuts.append(cut)
        start = cut
    return cuts
