"""Serving a dataset at a shorter maximum splits longer rows; every target is kept exactly once.

Token-identity data: every token but EOS is its own position in the stream, so a row's first
token says where it starts and its targets are positions ``start + 1 .. start + L``."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from ddecomp.data.blend import Blend
from ddecomp.data.dataset import open_dataset
from ddecomp.errors import UserError
from ddecomp.loading.protocols import BucketData
from ddecomp.loading.rebucket import Rebucketed, rebucket, total_targets
from ddecomp.loading.vsl import VSLLoader
from ddecomp.loading.world import World
from ddecomp.preparing.pipeline import TokensConfig, prepare_tokens
from ddecomp.training.builders import build_loader
from ddecomp.training.config import TrainConfig
from tests._fixtures import assert_resume_equivalent, identity_tokens, random_lengths

EOS = 1 << 31


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    toks = identity_tokens(random_lengths(500, 5, lo=3, hi=900), EOS)
    root = tmp_path_factory.mktemp("rebucket")
    prepare_tokens(TokensConfig(toks, root, eos_id=EOS, min_len=16, max_len=256, overwrite=True))
    return root, toks


def targets_of(ds: BucketData, toks: np.ndarray) -> Counter[int]:
    """Every row of every bucket read through the view: checks each row is the token file's
    slice at its start, and counts the target positions."""
    seen: Counter[int] = Counter()
    src = ds.for_epoch(0)
    for L, n in ds.bucket_rows.items():
        if not n:
            continue
        rows = src.rows(L, np.arange(n), out=np.empty((n, L + 1), dtype=np.int64))
        for row in rows:
            s = int(row[0])
            assert np.array_equal(row, toks[s : s + L + 1]), (L, s)
            seen.update(range(s + 1, s + L + 1))
    return seen


@pytest.mark.parametrize("max_len", [64, 128])
def test_every_target_once_and_pieces_share_one_token(data, max_len: int) -> None:
    root, toks = data
    ds = open_dataset(root)
    view = rebucket(ds, max_len)
    assert isinstance(view, Rebucketed)
    assert max(view.bucket_rows) == view.max_len == max_len
    long_rows = sum(n for L, n in ds.bucket_rows.items() if L > max_len)
    assert long_rows > 10  # vacuity: there are rows to split
    assert total_targets(view.bucket_rows) == total_targets(ds.bucket_rows)
    for L in ds.bucket_rows:
        if L < max_len:
            assert view.bucket_rows[L] == ds.bucket_rows[L]
    want = targets_of(ds, toks)
    got = targets_of(view, toks)
    assert got == want  # the same positions ...
    assert set(got.values()) == {1}  # ... each exactly once
    # the two halves of a row of 2M + 1 tokens share its middle token
    L2 = 2 * max_len
    row = ds.rows(L2, [0])[0]
    first = view._long[[L for L, *_ in view._long].index(L2)][3]
    halves = view.for_epoch(0).rows(max_len, [first, first + 1])
    assert np.array_equal(halves[0], row[: max_len + 1])
    assert np.array_equal(halves[1], row[max_len:])


def test_a_blend_splits_the_same_way(data) -> None:
    root, toks = data
    blend = Blend([(open_dataset(root), 1.0)])
    view = rebucket(blend, 64)
    assert isinstance(view, Rebucketed)
    assert not hasattr(view.for_epoch(0).src, "windows")  # the generic path: whole rows, cut
    got = targets_of(view, toks)
    assert got == targets_of(open_dataset(root), toks)
    assert set(got.values()) == {1}


def test_the_loader_serves_long_documents_at_a_shorter_maximum_exactly_once(data) -> None:
    root, toks = data
    ds = open_dataset(root)
    loader = VSLLoader(rebucket(ds, 64), tokens_per_step=512, cycles=2, world=World())
    seen: Counter[int] = Counter()
    for b in loader:
        assert b["seq_len"] <= 64
        for row in b["input_ids"].numpy():
            s = int(row[0])
            assert np.array_equal(row, toks[s : s + b["seq_len"]])
            seen.update(range(s + 1, s + b["seq_len"] + 1))
    assert set(seen.values()) == {1}
    long_targets = {int(s) + j for s in ds.row_starts(256) for j in range(1, 257)}
    assert len(long_targets & set(seen)) > 0.5 * len(long_targets)  # 256-token documents served


def test_train_max_len_below_the_dataset_keeps_the_long_buckets(data, tmp_path: Path) -> None:
    """``train --max-len 64`` on a dataset prepared to 256: the plan serves the long buckets'
    tokens too (the loader dropped them before)."""
    root, _ = data
    ds = open_dataset(root)
    cfg = TrainConfig(data=str(root), out=str(tmp_path), tokens_per_step=512, max_len=64)
    loader = build_loader(cfg, ds, 64, World())
    assert max(loader.step_lengths) == 64
    long_share = total_targets({L: n for L, n in ds.bucket_rows.items() if L > 64})
    assert long_share > 0.3 * total_targets(ds.bucket_rows)  # vacuity: much to lose
    served = len(loader) * 512
    assert served > 0.9 * total_targets(ds.bucket_rows)


def test_refuses_a_maximum_outside_the_range(data) -> None:
    ds = open_dataset(data[0])
    assert rebucket(ds, 256) is ds
    for bad in (512, 8, 96):
        with pytest.raises(UserError, match=r"power of two in the dataset's range 16\.\.256"):
            Rebucketed(ds, bad)


def test_resume_at_every_step_and_a_state_of_the_full_maximum_is_refused(data) -> None:
    ds = open_dataset(data[0])

    def make() -> VSLLoader:
        return VSLLoader(rebucket(ds, 64), tokens_per_step=512, cycles=2, world=World())

    assert assert_resume_equivalent(make) >= 3
    full = VSLLoader(ds, tokens_per_step=512, cycles=2, world=World())
    with pytest.raises(UserError, match="dataset"):
        make().load_state_dict(full.state_dict())
