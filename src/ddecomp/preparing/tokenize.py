"""Tokenizers (HF ``tokenizers``), EOS/BOS resolution and fast document encoding.

- :func:`load_tokenizer` takes a ``tokenizer.json`` path, a local HF tokenizer directory, or a hub
  name (``Tokenizer.from_pretrained``, the ordinary HF loading code).
- :func:`train_bpe` trains a deterministic byte-level BPE when no tokenizer is given, so a prepared
  dataset is self-contained (:func:`save_tokenizer` writes it atomically).
- :func:`encode_documents` is the hot path: documents -> one flat token array with EOS appended to
  each (BOS prepended on request) + per-document lengths.

Encoding speed. Almost all the time is HF's Rust encoder; turning its per-document id lists into
one numpy array costs ~2-3% on top (measured on the stdlib corpus, 8.6M tokens: 0.18 s to build
the ``Encoding.ids`` lists, +0.01 s to append them to an ``array('I')`` and view it with
``np.frombuffer``; ``np.fromiter`` over ``itertools.chain`` 0.21 s, ``np.concatenate`` of
per-document ``np.asarray`` 0.22 s, slice assignment into a preallocated array 0.21 s, a Python
list + ``np.array`` 0.33 s). We call ``encode_batch_fast`` (no character offsets) on chunks of
about 4M characters, so the ``Encoding`` objects alive at once stay bounded (~100 B per token)
however many documents a caller passes. HF's encoder peaks at ~300-400 B of memory per token of
one input (3.9 GB for the 8.6M-token stdlib as one byte-level BPE document), so a document over
:data:`LONG_DOC_CHARS` (1M characters) is encoded in pieces cut at seams verified to leave its
ids unchanged (:mod:`ddecomp.preparing.seams`). Memory for one document is then its text, ~8 B
per token for the ids, and one batch of pieces (measured, byte-level BPE 8192, 2026-12-01: a
45 MB document, 11.3M tokens, +371 MB over the process before it). A tokenizer whose seams
never verify (it alters the edges of every input) still encodes the document whole.
Throughput against HF's own ``encode_batch``:
``benchmarks/bench_tokenize.py`` (``encode_batch_fast`` skips the character offsets that
``encode_batch`` computes, which pays for our array building and more). Measured on the stdlib
corpus, 2 idle cores, 2026-11-26, vocab 50257: HF ``encode_batch`` 1.67M tokens/s,
``encode_batch_fast`` 2.54M, ``encode_documents`` 2.34M (140% of ``encode_batch``, 92% of
``encode_batch_fast``), in 2 single-threaded processes 2.18M.

Special-token text inside a document (a literal ``"<|endoftext|>"`` in a source file) is encoded
as ordinary text (``encode_special_tokens``), so EOS/BOS ids occur only where we put them and never
fake a document boundary.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from ddecomp.errors import UserError
from ddecomp.io import atomic_file
from ddecomp.preparing.config import MIN_TRAIN_VOCAB

logger = logging.getLogger(__name__)

EOS_CANDIDATES = ("<|endoftext|>", "</s>", "<eos>", "<|end_of_text|>")
BOS_CANDIDATES = ("<s>", "<|begin_of_text|>", "<bos>", "<|startoftext|>")
TRAIN_SPECIAL_TOKEN = "<|endoftext|>"
TRAIN_SAMPLE_BYTES = 100_000_000  # BPE training reads at most this much text (the first docs)
_ENCODE_CHUNK_CHARS = 4_000_000  # text per encode_batch_fast call: bounds the Encodings alive
LONG_DOC_CHARS = 1_000_000  # a longer document is encoded in pieces cut at verified seams


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _disable_truncation_and_padding(tok: Tokenizer, source: str) -> None:
    # A tokenizer.json saved for fine-tuning may truncate to e.g. 512 tokens: that would silently
    # cut every longer document. Pretraining data must be encoded whole.
    if tok.truncation is not None:
        logger.warning(
            "%s: truncation %s disabled: documents are encoded whole", source, tok.truncation
        )
        tok.no_truncation()
    if tok.padding is not None:
        logger.warning("%s: padding disabled: documents are encoded unpadded", source)
        tok.no_padding()


def load_tokenizer(spec: str) -> tuple[Tokenizer, str, str]:
    """Load a tokenizer: returns ``(tokenizer, path_or_name, sha256)``.

    ``spec`` is tried, in order, as a ``tokenizer.json`` file, a directory holding one (a local HF
    tokenizer directory), and a hub name (``Tokenizer.from_pretrained``). The sha256 is that of the
    file's bytes; for a hub tokenizer it is that of its serialization ``tok.to_str()`` (the bytes
    :func:`save_tokenizer` writes), since the downloaded file's path is not exposed.
    Truncation and padding, if the file enables them, are switched off (logged).
    """
    path = Path(spec)
    if path.is_dir():
        if not (path / "tokenizer.json").is_file():
            raise UserError(
                f"cannot load tokenizer {spec!r}: directory has no tokenizer.json; "
                "pass a tokenizer.json path or a directory containing one"
            )
        path = path / "tokenizer.json"
    if path.is_file():
        try:
            data = path.read_bytes()
            tok = Tokenizer.from_str(data.decode("utf-8"))
        except Exception as e:  # OSError, UnicodeDecodeError, or tokenizers' plain Exception
            raise UserError(
                f"cannot load tokenizer {spec!r}: {path} is not a valid tokenizer.json "
                f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
            ) from e
        source = str(path.resolve())
        _disable_truncation_and_padding(tok, source)
        return tok, source, _sha256(data)
    if spec.endswith((".json", "/")) or spec.startswith(("/", ".", "~")) or spec.count("/") > 1:
        raise UserError(  # a path, not a hub name ("org/name"): say so, without asking the hub
            f"cannot load tokenizer {spec!r}: no such file or directory; pass an existing "
            "tokenizer.json, a directory holding one, or a hub name such as gpt2"
        )
    try:
        tok = Tokenizer.from_pretrained(spec)
    except Exception as e:  # network, 404, parse: the hub's message is the useful part
        said = " ".join(str(e).split()) or type(e).__name__
        raise UserError(
            f"cannot load tokenizer {spec!r}: not a file, not a directory with tokenizer.json, "
            f"and the hub said: {said}; pass a local tokenizer.json"
        ) from e
    _disable_truncation_and_padding(tok, spec)
    return tok, spec, _sha256(tok.to_str().encode("utf-8"))


def _training_sample(texts: Iterable[str], max_bytes: int, seen: list[int]) -> Iterator[str]:
    """The first documents of ``texts`` until ``max_bytes`` of UTF-8 (the last may overshoot).

    A document over :data:`LONG_DOC_CHARS` is given to the trainer in pieces cut before a
    whitespace run that follows a non-space character: the ByteLevel (GPT-2) pre-tokenizer
    never joins across such a point, so the trainer counts the same pre-tokens and the
    tokenizer is the same, while HF's memory is that of one piece, not of the whole document.
    """
    from ddecomp.preparing.seams import cut_points

    total = 0
    for text in texts:
        if total >= max_bytes:
            break
        total += len(text.encode("utf-8", "surrogatepass"))
        seen[0] += 1
        seen[1] = total
        if len(text) <= LONG_DOC_CHARS:
            yield text
            continue
        bounds = [0, *cut_points(None, text, LONG_DOC_CHARS), len(text)]
        for a, b in itertools.pairwise(bounds):
            yield text[a:b]


def train_bpe(
    texts: Iterable[str],
    vocab_size: int = 8192,
    max_bytes: int = TRAIN_SAMPLE_BYTES,
    progress: bool = False,
) -> Tokenizer:
    """Train a byte-level BPE tokenizer (GPT-2 style) on ``texts``; deterministic.

    ByteLevel pre-tokenizer (GPT-2 regex, no prefix space) and decoder, ``BpeTrainer`` with the
    256-byte initial alphabet (so any text encodes, no unknown token) and the special token
    ``<|endoftext|>`` (id 0). Sample: the *first* documents, in order, until ``max_bytes``
    (100 MB) of text -- streaming, deterministic, and no need to know the corpus size in advance;
    pass an evenly spaced subset if the first documents are not representative. The same texts
    give a byte-identical ``tokenizer.json`` in any process, whatever the hash seeds (tested).
    Time on the 31.5 MB stdlib corpus, 2 idle cores: 3.5 s for 8192, 3.8 s for 50257.
    The vocabulary can end up smaller than ``vocab_size`` on a tiny corpus.
    """
    if vocab_size < MIN_TRAIN_VOCAB:
        raise UserError(
            f"--vocab-size {vocab_size} is too small: a byte-level BPE needs at least "
            f"{MIN_TRAIN_VOCAB} (256 bytes + {TRAIN_SPECIAL_TOKEN})"
        )
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[TRAIN_SPECIAL_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=progress,  # the tokenizers library's own bars (a terminal only)
    )
    seen = [0, 0]
    tok.train_from_iterator(_training_sample(texts, max_bytes, seen), trainer=trainer)
    if seen[0] == 0:
        raise UserError("cannot train a tokenizer on an empty corpus: no documents were read")
    logger.info(
        "trained byte-level BPE, vocab %d, on %d documents (%d bytes)",
        tok.get_vocab_size(),
        seen[0],
        seen[1],
    )
    return tok


def save_tokenizer(tok: Tokenizer, path: str | Path) -> str:
    """Write ``tok`` as JSON to ``path`` atomically (temp file + ``os.replace``); return sha256."""
    path = Path(path)
    data = tok.to_str().encode("utf-8")
    with atomic_file(path, fsync=True) as f:
        f.write(data)
    return _sha256(data)


def id_bound(tok: Tokenizer) -> int:
    """One more than the largest token id (the embedding table size), added tokens included."""
    vocab = tok.get_vocab(with_added_tokens=True)
    assert vocab, "tokenizer has an empty vocabulary"
    return max(vocab.values()) + 1


@dataclass(frozen=True)
class TokenizerInfo:
    """What the manifest records about the tokenizer."""

    source: str
    sha256: str
    vocab_size: int
    eos_id: int
    eos_token: str
    bos_id: int | None = None
    bos_token: str | None = None

    def __post_init__(self) -> None:
        if self.vocab_size < 1:
            raise ValueError(f"vocab_size must be >= 1, got {self.vocab_size}")
        if not 0 <= self.eos_id < self.vocab_size:
            raise ValueError(f"eos_id {self.eos_id} is outside [0, {self.vocab_size})")
        if (self.bos_id is None) != (self.bos_token is None):
            raise ValueError(f"bos_id {self.bos_id} and bos_token {self.bos_token!r} disagree")
        if self.bos_id is not None and not 0 <= self.bos_id < self.vocab_size:
            raise ValueError(f"bos_id {self.bos_id} is outside [0, {self.vocab_size})")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve_special(
    tok: Tokenizer, eos_token: str | None, bos: bool
) -> tuple[int, str, int | None, str | None]:
    """``(eos_id, eos_token, bos_id, bos_token)`` for ``tok``.

    EOS: the token ``eos_token`` names, else the first present of :data:`EOS_CANDIDATES`.
    BOS (only when ``bos``): the first present of :data:`BOS_CANDIDATES`, else the EOS token
    (GPT-2 style, where ``<|endoftext|>`` also starts a document).
    """
    if eos_token is not None:
        eos_id = tok.token_to_id(eos_token)
        if eos_id is None:
            raise UserError(
                f"--eos-token {eos_token!r} is not in the tokenizer's vocabulary; "
                "pass a token the tokenizer has"
            )
        name = eos_token
    else:
        found = [(t, i) for t in EOS_CANDIDATES if (i := tok.token_to_id(t)) is not None]
        if not found:
            raise UserError(
                f"the tokenizer has none of the usual end-of-text tokens "
                f"({', '.join(EOS_CANDIDATES)}); pass --eos-token naming its end-of-text token"
            )
        name, eos_id = found[0]
    if not bos:
        return eos_id, name, None, None
    for cand in BOS_CANDIDATES:
        bos_id = tok.token_to_id(cand)
        if bos_id is not None:
            return eos_id, name, bos_id, cand
    return eos_id, name, eos_id, name


def token_dtype(vocab_size: int) -> np.dtype[Any]:
    """uint16 when every id in ``[0, vocab_size)`` fits (vocab_size <= 65536), else uint32."""
    if not 1 <= vocab_size <= 1 << 32:
        raise UserError(f"vocabulary size {vocab_size} is outside [1, 2**32]")
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)


Segment = tuple[str, bool, bool]  # (text, first piece of its document, last piece)


def _segments(tok: Tokenizer, texts: Sequence[str]) -> Iterator[Segment]:
    """Each document whole, or cut at verified seams when longer than :data:`LONG_DOC_CHARS`."""
    from ddecomp.preparing.seams import cut_points

    def encode_one(text: str) -> list[int]:
        return list(tok.encode(text, add_special_tokens=False).ids)

    for text in texts:
        if len(text) <= LONG_DOC_CHARS:
            yield text, True, True
            continue
        bounds = [0, *cut_points(encode_one, text, LONG_DOC_CHARS), len(text)]
        if len(bounds) == 2:
            logger.warning(
                "a %d-character document has no verified seam for this tokenizer: encoded "
                "whole (about 400 bytes of memory per token)",
                len(text),
            )
        for a, b in itertools.pairwise(bounds):
            yield text[a:b], a == 0, b == len(text)


def _chunks(segments: Iterator[Segment], max_chars: int) -> Iterator[list[Segment]]:
    batch: list[Segment] = []
    size = 0
    for seg in segments:
        batch.append(seg)
        size += len(seg[0])
        if size >= max_chars:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def encode_documents(
    tok: Tokenizer,
    texts: Sequence[str],
    eos_id: int,
    bos_id: int | None = None,
    dtype: np.dtype[Any] | type | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Encode ``texts`` into ``(tokens, lengths)``: one flat array and int64 lengths per document.

    Document i is ``[bos_id] + tok.encode(texts[i], add_special_tokens=False).ids + [eos_id]``
    (BOS only when given; special-token text inside documents encoded as plain text), laid out
    one after another; ``lengths[i]`` counts its tokens, EOS/BOS included. ``dtype`` defaults to
    :func:`token_dtype` of the tokenizer's id bound. Ids are collected as uint32 and checked
    against the dtype before narrowing, so an id that does not fit raises instead of wrapping.
    """
    dtype = token_dtype(id_bound(tok)) if dtype is None else np.dtype(dtype)
    if dtype not in (np.dtype(np.uint16), np.dtype(np.uint32)):
        raise UserError(f"token dtype {dtype} is not supported; use uint16 or uint32")
    limit = int(np.iinfo(dtype).max)
    for name, value in (("eos_id", eos_id), ("bos_id", bos_id)):
        if value is not None and not 0 <= value <= limit:
            raise UserError(f"{name} {value} does not fit in {dtype}; use uint32")
    if tok.truncation is not None or tok.padding is not None:
        raise UserError("the tokenizer truncates or pads; load it with load_tokenizer()")
    encode = getattr(tok, "encode_batch_fast", tok.encode_batch)  # _fast: tokenizers >= 0.20
    ids = array("I")
    lengths = array("q")
    extra = 1 if bos_id is None else 2
    doc_len = 0
    was_special = tok.encode_special_tokens
    tok.encode_special_tokens = True
    try:
        for batch in _chunks(_segments(tok, texts), _ENCODE_CHUNK_CHARS):
            encs = encode([text for text, _, _ in batch], add_special_tokens=False)
            for (_, first, last), enc in zip(batch, encs, strict=True):
                if first and bos_id is not None:
                    ids.append(bos_id)
                piece = enc.ids
                ids.extend(piece)
                doc_len += len(piece)
                if last:
                    ids.append(eos_id)
                    lengths.append(doc_len + extra)
                    doc_len = 0
    finally:
        tok.encode_special_tokens = was_special
    tokens = np.frombuffer(ids, dtype=np.uint32)
    if tokens.size and dtype != tokens.dtype:
        top = int(tokens.max())
        if top > limit:
            raise UserError(f"token id {top} does not fit in {dtype}; use uint32")
        tokens = tokens.astype(dtype)
    out_lengths = np.frombuffer(lengths, dtype=np.int64)
    assert int(out_lengths.sum()) == tokens.size
    return tokens, out_lengths
