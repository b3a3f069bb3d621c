"""Long-context retrieval tasks built from held-out documents (pure numpy, seeded, no I/O).

Every example is a token sequence of exactly ``L`` tokens: a *prompt* of ``L - K`` tokens and an
*answer* of ``K`` tokens, with ``choices - 1`` distractor answers of the same length. A model is
scored by the summed log-likelihood of each candidate answer after the prompt
(:mod:`ddecomp.evaluation.scoring`). The tasks work on token ids, so they need no tokenizer and
test what a base model can do without instructions: find a planted record and copy what follows
it (an induction-style retrieval, as the passkey test reduces to for a base model).

- ``passkey``: real held-out text (documents in a seeded order, EOS between them) with a needle
  ``marker + key`` planted at fractional ``depth`` (0 = the start of the text, 1 = its end); the
  prompt ends with the ``marker`` again and the answer is the ``key``. Marker and keys are random
  tokens drawn from the held-out text's own vocabulary (EOS and BOS excluded); distractors are
  other random keys.
- ``kv-retrieval`` (as multi-document QA, the paper's long-context evaluation): ``D`` held-out
  documents, each opening with its own ``key value`` record (random tokens); the *gold*
  document, at position ``round(depth * (D - 1))``, carries the queried key. The prompt ends with
  that key and the answer is its value; the distractors are values of other documents in the
  context, so a model must find the right record, not just any record. ``D = clamp(body // 64,
  choices, 20)`` for a body of ``L - 2K`` tokens (20 documents from 1,288 tokens on).

Seeds: example ``i`` at length ``L`` and depth index ``j`` of task ``t`` draws from
``default_rng([seed, t, L, j, i])``, so an example never depends on the other lengths, depths or
the sample count asked for.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ddecomp.errors import UserError

TASKS = ("passkey", "kv-retrieval")
KEY_TOKENS = 4  # K: tokens per key (the answer) and per passkey marker
MAX_DOCS = 20  # kv-retrieval: documents per context at most (paper: 10-30)
_DOC_TOKENS = 64  # kv-retrieval: body tokens per document the count aims at


@dataclass(frozen=True, eq=False)
class Example:
    """One multiple-choice example: ``prompt`` (int64 ``[L - K]``), ``candidates`` (int64
    ``[choices, K]``), the right one at row ``answer``; ``depth`` is where the needle or the
    gold document sits, as a fraction of the prompt."""

    prompt: np.ndarray
    candidates: np.ndarray
    answer: int
    depth: float


@dataclass(frozen=True, eq=False)
class Haystack:
    """Held-out documents (EOS last in each) and the token ids the tasks may draw keys from."""

    documents: tuple[np.ndarray, ...]
    vocabulary: np.ndarray  # sorted distinct ids of the documents, EOS and BOS removed

    @classmethod
    def from_documents(cls, docs: list[np.ndarray], special: tuple[int, ...]) -> Haystack:
        docs = [np.asarray(d, dtype=np.int64) for d in docs if len(d) > 1]
        if not docs:
            raise UserError("the held-out split has no document of two tokens or more")
        vocab = np.unique(np.concatenate(docs))
        vocab = vocab[~np.isin(vocab, np.asarray(special, dtype=np.int64))]
        if vocab.size < 2:
            raise UserError("the held-out text uses fewer than 2 distinct tokens: nothing to plant")
        return cls(tuple(docs), vocab)

    def text(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` tokens of held-out text: documents in a seeded order from a seeded start,
        wrapping around when the split is shorter than ``n``."""
        order = rng.permutation(len(self.documents))
        stream = np.concatenate([self.documents[k] for k in order])
        start = int(rng.integers(0, stream.size))
        reps = -(-(start + n) // stream.size)
        return np.tile(stream, reps)[start : start + n]


def min_length(task: str, choices: int) -> int:
    """The shortest ``L`` a task can be built at (prompt with some text and its records)."""
    K = KEY_TOKENS
    if task == "passkey":
        return 4 * K + 8  # marker + key planted, marker queried, answer, 8 tokens of text
    return 2 * K + choices * (2 * K + 4)  # query + answer, ``choices`` documents of 2K + 4


def _keys(rng: np.random.Generator, vocab: np.ndarray, n: int) -> np.ndarray:
    """``n`` distinct random keys ``[n, K]`` from ``vocab``."""
    if vocab.size**KEY_TOKENS < 4 * n:  # else drawing distinct keys could take forever
        raise UserError(
            f"the held-out text has only {vocab.size} distinct tokens: too few for {n} distinct "
            f"{KEY_TOKENS}-token keys; evaluate on a dataset with a richer held-out split"
        )
    out: list[tuple[int, ...]] = []
    seen: set[tuple[int, ...]] = set()
    while len(out) < n:
        k = tuple(int(x) for x in vocab[rng.integers(0, vocab.size, KEY_TOKENS)])
        if k not in seen:
            seen.add(k)
            out.append(k)
    return np.asarray(out, dtype=np.int64).reshape(n, KEY_TOKENS)


def _shuffled(
    rng: np.random.Generator, right: np.ndarray, wrong: np.ndarray
) -> tuple[np.ndarray, int]:
    cands = np.concatenate([right[None], wrong])
    perm = rng.permutation(cands.shape[0])
    return cands[perm], int(np.flatnonzero(perm == 0)[0])


def passkey(hay: Haystack, L: int, depth: float, choices: int, rng: np.random.Generator) -> Example:
    """A passkey example of exactly ``L`` tokens (see the module docstring)."""
    K = KEY_TOKENS
    marker, *keys = _keys(rng, hay.vocabulary, choices + 1)
    key = keys[0]
    n_text = L - 4 * K
    text = hay.text(rng, n_text)
    at = round(depth * n_text)
    prompt = np.concatenate([text[:at], marker, key, text[at:], marker])
    cands, answer = _shuffled(rng, key, np.asarray(keys[1:]))
    assert prompt.size + K == L
    return Example(prompt, cands, answer, at / prompt.size)


def kv_retrieval(
    hay: Haystack, L: int, depth: float, choices: int, rng: np.random.Generator
) -> Example:
    """A key-value retrieval example of exactly ``L`` tokens over several held-out documents."""
    K = KEY_TOKENS
    body = L - 2 * K
    D = int(np.clip(body // _DOC_TOKENS, choices, MAX_DOCS))
    records = _keys(rng, hay.vocabulary, 2 * D).reshape(D, 2, K)  # [doc, key|value, K]
    gold = round(depth * (D - 1))
    sizes = body // D + (np.arange(D) < body % D)
    docs = []
    for d in range(D):
        text = hay.documents[int(rng.integers(0, len(hay.documents)))]
        n = int(sizes[d]) - 2 * K  # the document's text, cut to fit, still ending in its EOS
        text = text if text.size <= n else np.r_[text[: n - 1], text[-1]]
        fill = hay.text(rng, n - text.size)  # a short document is topped up with more text
        docs.append(np.concatenate([records[d].ravel(), text, fill]))
    starts = np.cumsum([0, *[x.size for x in docs]])
    prompt = np.concatenate([*docs, records[gold, 0]])
    others = np.delete(np.arange(D), gold)
    wrong = records[rng.choice(others, size=choices - 1, replace=False), 1]
    cands, answer = _shuffled(rng, records[gold, 1], wrong)
    assert prompt.size + K == L
    return Example(prompt, cands, answer, float(starts[gold]) / prompt.size)


def build_examples(
    task: str,
    hay: Haystack,
    L: int,
    depth_index: int,
    depth: float,
    samples: int,
    seed: int,
    choices: int,
) -> list[Example]:
    """``samples`` examples of ``task`` at length ``L`` and ``depth`` (seeded per example)."""
    if task not in TASKS:
        raise UserError(f"--task {task!r} is not one of {', '.join(TASKS)}")
    if task == "kv-retrieval" and choices > MAX_DOCS:
        raise UserError(
            f"--choices {choices} is more than kv-retrieval's {MAX_DOCS} documents (its "
            f"distractors are other documents' values); use at most {MAX_DOCS}"
        )
    if L < min_length(task, choices):
        raise UserError(
            f"--lengths {L} is too short for {task} with {choices} choices: use at least "
            f"{min_length(task, choices)} tokens"
        )
    make = passkey if task == "passkey" else kv_retrieval
    t = TASKS.index(task)
    return [
        make(hay, L, depth, choices, np.random.default_rng([seed, t, L, depth_index, i]))
        for i in range(samples)
    ]
