"""Retrieval tasks: exact lengths, the planted record where it is said to be, seeded examples."""

from __future__ import annotations

import numpy as np
import pytest

from ddecomp.errors import UserError
from ddecomp.evaluation.tasks import KEY_TOKENS, Haystack, build_examples, min_length

EOS = 63


def _hay(n_docs: int = 30, seed: int = 0) -> Haystack:
    rng = np.random.default_rng(seed)
    docs = [np.r_[rng.integers(0, 60, int(rng.integers(5, 200))), EOS] for _ in range(n_docs)]
    return Haystack.from_documents(docs, (EOS,))


def _find(seq: np.ndarray, sub: np.ndarray) -> list[int]:
    w = np.lib.stride_tricks.sliding_window_view(seq, sub.size)
    return np.flatnonzero((w == sub).all(axis=1)).tolist()


@pytest.mark.parametrize("task", ["passkey", "kv-retrieval"])
@pytest.mark.parametrize("L", [64, 100, 256, 1024, 4096])
def test_examples_have_the_stated_length_in_tokens(task: str, L: int) -> None:
    hay = _hay()
    for j, d in enumerate((0.0, 0.5, 1.0)):
        exs = build_examples(task, hay, L, j, d, 5, 7, 4)
        assert len(exs) == 5
        for e in exs:
            assert e.prompt.size + KEY_TOKENS == L  # prompt and answer: exactly L tokens
            assert e.candidates.shape == (4, KEY_TOKENS)
            assert len({tuple(c) for c in e.candidates.tolist()}) == 4  # distinct choices
            assert not np.isin(e.candidates, [EOS]).any()  # keys are never EOS
            assert 0 <= e.depth <= 1


def test_passkey_plants_the_key_after_the_marker_at_its_depth() -> None:
    hay = _hay()
    L = 512
    for j, d in enumerate((0.0, 0.25, 0.5, 0.75, 1.0)):
        for e in build_examples("passkey", hay, L, j, d, 10, 3, 4):
            marker = e.prompt[-KEY_TOKENS:]
            key = e.candidates[e.answer]
            needle = np.r_[marker, key]
            at = _find(e.prompt, needle)
            assert at, "the needle is in the prompt"
            n_text = L - 4 * KEY_TOKENS
            assert at[0] == round(d * n_text)  # depth is a fraction of the text before it
            # the rest of the prompt is held-out text, in document order within a document
            assert abs(e.depth - d * n_text / e.prompt.size) < 1e-9


def test_kv_retrieval_puts_the_gold_record_in_the_gold_document() -> None:
    hay = _hay()
    checked = 0
    for j, d in enumerate((0.0, 0.5, 1.0)):
        for e in build_examples("kv-retrieval", hay, 1024, j, d, 8, 5, 4):
            key = e.prompt[-KEY_TOKENS:]
            value = e.candidates[e.answer]
            hits = _find(e.prompt[:-KEY_TOKENS], np.r_[key, value])
            assert len(hits) == 1
            assert hits[0] / e.prompt.size == pytest.approx(e.depth)
            # the distractors are the values of other documents in the same context
            for c in np.delete(e.candidates, e.answer, axis=0):
                assert _find(e.prompt, c)
            checked += 1
    assert checked == 24
    first = build_examples("kv-retrieval", hay, 1024, 0, 0.0, 4, 5, 4)
    last = build_examples("kv-retrieval", hay, 1024, 2, 1.0, 4, 5, 4)
    assert all(e.depth == 0 for e in first)
    assert all(e.depth > 0.9 for e in last)


def test_examples_are_seeded_per_example() -> None:
    hay = _hay()
    a = build_examples("passkey", hay, 256, 1, 0.5, 6, 11, 4)
    b = build_examples("passkey", hay, 256, 1, 0.5, 3, 11, 4)  # fewer samples: the same first 3
    c = build_examples("passkey", hay, 256, 1, 0.5, 3, 12, 4)
    for x, y in zip(a[:3], b, strict=True):
        assert np.array_equal(x.prompt, y.prompt)
        assert x.answer == y.answer
    assert not all(np.array_equal(x.prompt, y.prompt) for x, y in zip(a, c, strict=False))
    assert len({e.answer for e in a}) > 1  # the right answer is not always in one place


def test_too_short_or_unknown_is_one_line() -> None:
    hay = _hay()
    with pytest.raises(UserError, match="too short for kv-retrieval"):
        build_examples("kv-retrieval", hay, min_length("kv-retrieval", 4) - 1, 0, 0.5, 1, 0, 4)
    with pytest.raises(UserError, match="not one of"):
        build_examples("qa", hay, 256, 0, 0.5, 1, 0, 4)
    with pytest.raises(UserError, match="no document"):
        Haystack.from_documents([np.array([EOS])], (EOS,))
