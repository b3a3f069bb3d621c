"""Progress from the shard jobs' records (either engine): documents, tokens, tokens/s, ETA."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from ddecomp import TokensConfig, prepare_tokens
from tests._fixtures import EOS, identity_tokens, random_lengths


def test_progress_lines_carry_an_eta_that_counts_down_to_zero(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    toks = identity_tokens(random_lengths(300, seed=4, hi=3000))
    with caplog.at_level(logging.INFO, logger="ddecomp.preparing.progress"):
        man = prepare_tokens(
            TokensConfig(toks, tmp_path, EOS, min_len=16, max_len=512, shard_size=20_000)
        )
    lines = [r.getMessage() for r in caplog.records if "shard" in r.getMessage()]
    assert len(lines) == man["totals"]["shards"] >= 4  # one line per shard
    etas = [re.search(r"about ([\d,]+) s left", line) for line in lines]
    assert all(etas), lines
    assert etas[-1] is not None
    assert etas[-1].group(1) == "0"  # nothing left after the last shard
    assert "documents" in lines[0]
    assert "tokens/s" in lines[0]
