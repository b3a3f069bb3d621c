"""A bucket file edited to point outside its shard (same size, so opening's size check passes):
the in-memory kind refuses it at open, the mapped kind (ddecomp.data.rowstarts) at the read that
meets it; one DataError naming the file, never other bytes (a negative start would be numpy's
index from the end)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ddecomp import DataError, TokensConfig, open_dataset, prepare_tokens
from tests._fixtures import EOS, identity_tokens, random_lengths


def _damaged(tmp_path: Path, value: int) -> tuple[Path, Path, int, int]:
    """A dataset whose first shard's largest bucket file has one start set to ``value``;
    ``(root, that file, L, the row's index in the bucket)``."""
    root = tmp_path / "ds"
    toks = identity_tokens(random_lengths(200, seed=4, hi=1500))
    prepare_tokens(TokensConfig(toks, root, eos_id=EOS, dtype="uint32", min_len=16, max_len=128,
                                shard_size=30_000))  # fmt: skip
    man = json.loads((root / "manifest.json").read_text())
    recs = man["shards"][0]["buckets"]["train"]
    L = max(int(k) for k, r in recs.items() if r["rows"] > 3)
    path = root / recs[str(L)]["path"]
    starts = np.load(path)
    starts[2] = value
    np.save(path, starts)  # same shape and size: opening's cheap checks pass
    return root, path, L, 2


@pytest.mark.parametrize("value", [-1, -(1 << 40), 1 << 40])
def test_a_start_outside_its_shard_is_one_line_in_both_kinds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: int
) -> None:
    root, path, L, row = _damaged(tmp_path, value)
    with pytest.raises(DataError, match=rf"{path}: a row lies outside its shard"):
        open_dataset(root)
    monkeypatch.setattr("ddecomp.data.rowstarts.EAGER_ROWS", 0)
    ds = open_dataset(root)  # mapped: nothing read yet
    ok = [i for i in range(ds.num_rows(L)) if i != row]
    assert ds.rows(L, ok).shape == (len(ok), L + 1)  # the other rows are served
    with pytest.raises(DataError, match=rf"{path}: a row lies outside its shard"):
        ds.rows(L, [row])
