"""Attacks on ``ddecomp eval``'s task builder: each ends in one line, never a hang or a trace."""

from __future__ import annotations

import numpy as np
import pytest

from ddecomp.errors import UserError
from ddecomp.evaluation.tasks import Haystack, build_examples

EOS = 9


def test_a_held_out_split_of_two_tokens_cannot_hang_the_key_draw() -> None:
    # 2 distinct tokens make 16 four-token keys: kv-retrieval needs 2 per document (found
    # looping forever before the check)
    hay = Haystack.from_documents([np.array([1, 2, 1, 2, 1, EOS])] * 5, (EOS,))
    with pytest.raises(UserError, match="only 2 distinct tokens"):
        build_examples("kv-retrieval", hay, 2048, 0, 0.5, 1, 0, 4)
    assert build_examples("passkey", hay, 64, 0, 0.5, 1, 0, 2)  # 3 keys of 16: still fine


def test_more_choices_than_documents_is_one_line() -> None:
    rng = np.random.default_rng(0)
    hay = Haystack.from_documents([np.r_[rng.integers(0, 9, 50), EOS] for _ in range(9)], (EOS,))
    with pytest.raises(UserError, match="at most 20"):  # was a numpy ValueError from rng.choice
        build_examples("kv-retrieval", hay, 4096, 0, 0.5, 1, 0, 25)
    with pytest.raises(UserError, match="too short"):
        build_examples("passkey", hay, 0, 0, 0.5, 1, 0, 4)
