"""Held-out evaluation: seeded row choice, per-length loss against a direct computation."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from ddecomp.data.dataset import Dataset, open_dataset
from ddecomp.training.evaluate import EvalConfig, eval_lengths, eval_rows, evaluate, position_edges
from ddecomp.training.model import GPT, model_config
from tests.training._corpus import make_dataset

CPU = torch.device("cpu")


@given(st.dictionaries(st.sampled_from([16, 32, 64, 128, 256]), st.integers(1, 500), min_size=1),
       st.integers(1, 5000), st.integers(0, 3))  # fmt: skip
def test_eval_rows_are_a_seeded_sample_without_duplicates(
    rows: dict[int, int], tokens: int, seed: int
) -> None:
    cfg = EvalConfig(tokens_per_length=tokens, min_len=16, seed=seed)
    lengths = eval_lengths(sorted(rows), cfg)
    assert lengths == sorted(rows)
    chosen = eval_rows(rows, lengths, cfg)
    for L, idx in chosen.items():
        assert idx.size == min(rows[L], max(1, tokens // L)) > 0
        assert np.unique(idx).size == idx.size
        assert 0 <= idx.min()
        assert idx.max() < rows[L]
    again = eval_rows(rows, lengths, cfg)
    assert all(np.array_equal(chosen[L], again[L]) for L in lengths)


def test_eval_lengths_start_at_min_len_unless_none_reaches_it() -> None:
    assert eval_lengths([64, 128, 256, 512, 1024], EvalConfig(max_len=512)) == [256, 512]
    assert eval_lengths([16, 32], EvalConfig()) == [16, 32]


@given(st.integers(0, 16))
def test_position_edges_cover_every_position_once(k: int) -> None:
    L = 1 << k
    e = position_edges(L)
    assert e[0] == 0
    assert e[-1] == L
    assert all(a < b for a, b in itertools.pairwise(e))
    assert len(e) == k + 2


@pytest.fixture(scope="module")
def val(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    root = make_dataset(tmp_path_factory.mktemp("eval") / "ds", n_tokens=80_000, val_fraction=0.1)
    return open_dataset(root, split="val")


def test_evaluate_matches_a_direct_computation(val: Dataset) -> None:
    torch.manual_seed(0)
    model = GPT(model_config("tiny", 64))
    cfg = EvalConfig(tokens_per_length=1024, batch_tokens=300, min_len=16)
    res = evaluate(model, val, cfg, CPU)
    assert res is not None
    lengths = eval_lengths(list(val.bucket_lengths), cfg)
    assert len(lengths) >= 3
    chosen = eval_rows(dict(val.bucket_rows), lengths, cfg)
    for L in lengths:
        rows = torch.from_numpy(val.rows(L, chosen[L]).astype(np.int64))
        with torch.no_grad():
            logits = model(rows[:, :-1])
        want = torch.nn.functional.cross_entropy(logits.flatten(0, 1), rows[:, 1:].flatten())
        assert res["val_loss"][str(L)] == pytest.approx(float(want), rel=1e-5)
        assert res["val_tokens"][str(L)] == rows.shape[0] * L
    # the position bins, weighted by their widths, average back to the longest length's loss
    pos = res["position"]
    assert pos["seq_len"] == lengths[-1]
    widths = np.diff(pos["edges"])
    avg = float(np.dot(widths, pos["loss"]) / widths.sum())
    assert avg == pytest.approx(res["val_loss"][str(lengths[-1])], rel=1e-6)
    assert model.training  # evaluation restores the mode
