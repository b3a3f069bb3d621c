"""``batch["source"]``: every row of a blend says which source it was read from."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ddecomp import Blend, TokensConfig, VSLLoader, prepare_tokens
from tests._fixtures import EOS, assert_resume_equivalent, identity_tokens, random_lengths

SPAN = 10**7  # source s holds tokens s * SPAN + position: a token names its source


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("sources")
    out = []
    for s, (n, hi, tails) in enumerate(
        [(150, 600, "drop"), (60, 3000, "pack"), (250, 200, "drop")]
    ):
        toks = identity_tokens(random_lengths(n, seed=s, hi=hi)).astype(np.int64)
        toks[toks != EOS] += s * SPAN
        cfg = TokensConfig(toks.astype(np.uint32), root / f"src{s}", eos_id=EOS, min_len=16,
                           max_len=128, vocab_size=2**31, tails=tails)  # fmt: skip
        prepare_tokens(cfg)
        out.append(root / f"src{s}")
    return out


def _loader(sources: list[Path]) -> VSLLoader:
    blend = Blend([(sources[0], 1.0), (sources[1], 0.5), (sources[2], 1.7)], seed=3)
    return VSLLoader(blend, tokens_per_step=512, seed=1)


def test_every_row_names_the_source_it_was_read_from(sources: list[Path]) -> None:
    loader = _loader(sources)
    assert loader.ds.packed_lengths  # source 1's tail rows are in the blend
    seen = np.zeros(3, dtype=np.int64)
    packed_rows = 0
    for epoch in range(3):
        loader.set_epoch(epoch)
        for batch in loader:
            src = batch["source"]
            assert src.dtype.is_floating_point is False
            assert src.shape == (batch["input_ids"].shape[0],)
            rows = batch["input_ids"].numpy()
            packed_rows += int("cu_seqlens" in batch)
            for r, s in zip(rows, src.tolist(), strict=True):
                real = r[r != EOS]
                assert real.size  # vacuity: a row of tokens, not of padding only
                assert (real // SPAN == s).all(), (epoch, s, real[:5])
                seen[s] += 1
    assert (seen > 20).all(), seen
    assert packed_rows > 0  # steps holding tail rows were checked too


def test_sources_survive_resume(sources: list[Path]) -> None:
    assert assert_resume_equivalent(lambda: _loader(sources), epoch=1) >= 3
