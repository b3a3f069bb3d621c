"""``prepare --tails pack``: every target of every document trained exactly once (issue 14).

Token-identity corpora (every token names its stream position, :mod:`tests._fixtures`): a served
position's input token says which target it trains, so the tests count targets, not values.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ddecomp import TokensConfig, UserError, decompose_corpus, open_dataset, prepare_tokens
from ddecomp.data import layout, tailrows
from ddecomp.data.layout import MANIFEST, fingerprint
from ddecomp.data.stats import compute_stats, format_stats
from ddecomp.data.tailrows import IGNORE_LABEL, PAD_START, check_rows, row_pointers
from ddecomp.data.verify import verify_dataset
from ddecomp.loading.protocols import IGNORE_INDEX
from ddecomp.preparing.tails import best_fit_decreasing, cut_pieces, pack_tails
from tests._fixtures import EOS, identity_tokens, random_lengths


def _prepare(tmp: Path, lengths: np.ndarray, **kw: object) -> Path:
    toks = identity_tokens(lengths)
    args: dict[str, object] = {
        "min_len": 32,
        "max_len": 128,
        "val_fraction": 0.2,
        "shard_size": 20_000,
    }
    args.update(kw)
    out = tmp / "ds"
    prepare_tokens(TokensConfig(tokens=toks, out=out, eos_id=EOS, **args))  # type: ignore[arg-type]
    return out


def _served_targets(root: Path, split: str) -> np.ndarray:
    """Input positions of every target the split's rows train (padding excluded), sorted."""
    ds = open_dataset(root, split)
    got = []
    for L, n in ds.bucket_rows.items():
        if not n:
            continue
        out = np.empty((n, L + 1), dtype=np.int64)
        packed = ds.fill(L, np.arange(n), out)
        labels = out[:, 1:] if packed is None else packed.labels
        keep = labels != IGNORE_LABEL
        x = out[:, :-1][keep]
        y = labels[keep]
        # the label is the next token of the same document: position + 1, or its EOS
        assert bool(np.all((y == x + 1) | (y == EOS))), "a label crosses a document"
        got.append(x)
    return np.sort(np.concatenate(got)) if got else np.zeros(0, np.int64)


def _all_targets(root: Path, split: str) -> np.ndarray:
    ds = open_dataset(root, split)
    s, e = ds.document_bounds()
    return np.concatenate([np.arange(a, b - 1) for a, b in zip(s, e, strict=True)])


@pytest.mark.parametrize(
    ("long_docs", "tail_len"), [("split", None), ("spread", None), ("split", 8), ("spread", 16)]
)
def test_pack_trains_every_target_exactly_once(
    tmp_path: Path, long_docs: str, tail_len: int | None
) -> None:
    lengths = random_lengths(300, seed=3, hi=700)
    root = _prepare(tmp_path, lengths, tails="pack", tail_len=tail_len, long_docs=long_docs)
    man = json.loads((root / MANIFEST).read_text())
    assert man["tails"] == {"policy": "pack", "length": tail_len or 32}
    for split in ("train", "val"):
        got, want = _served_targets(root, split), _all_targets(root, split)
        assert want.size > 1000  # vacuity guard
        np.testing.assert_array_equal(got, want)  # kept = all, each once
        rec = man["splits"][split]
        assert rec["kept_targets"] == rec["targets"]
        tb = rec["tail_bucket"]
        assert tb["rows"] * tb["length"] == tb["targets"] + tb["padding"]
        assert tb["targets"] > 0
    verify_dataset(root)


def test_drop_still_drops_and_pack_keeps_what_drop_dropped(tmp_path: Path) -> None:
    lengths = random_lengths(200, seed=5, hi=500)
    drop = _prepare(tmp_path / "d", lengths)
    pack = _prepare(tmp_path / "p", lengths, tails="pack")
    man = json.loads((drop / MANIFEST).read_text())
    assert man["tails"] == {"policy": "drop"}
    assert man["version"] == 1  # as before --tails: every ddecomp reads it
    tr = man["splits"]["train"]
    dropped = tr["targets"] - tr["kept_targets"]
    assert dropped > 0
    pm = json.loads((pack / MANIFEST).read_text())["splits"]["train"]
    assert pm["tail_bucket"]["targets"] == dropped
    assert tr["buckets"] == pm["buckets"]  # the plain rows are the same rows
    ds = open_dataset(drop)
    assert not ds.packed_from
    assert ds.tail_index is None


def test_decompose_tail_pieces_cover_what_is_dropped() -> None:
    lengths = random_lengths(2000, seed=1, hi=5000)
    starts = np.cumsum(lengths) - lengths
    rng = np.random.default_rng(0)
    for long_docs in ("split", "spread"):
        d = decompose_corpus(starts, lengths, 64, 1024, long_docs, rng)
        assert int(d.tail_targets.sum()) == d.tail_tokens + d.short_document_tokens - (
            d.short_documents
        )
        assert int(d.tail_targets.min()) >= 1
        assert int(d.tail_targets.max()) < 64
        # pieces and tails tile every document's targets: coverage counts each target once
        cover = np.zeros(int(lengths.sum()) + 1, dtype=np.int64)
        for L, s in d.buckets.items():
            np.add.at(cover, (s[:, None] + np.arange(L)).ravel(), 1)
        np.add.at(cover, np.repeat(d.tail_starts, d.tail_targets) + _ranks(d.tail_targets), 1)
        is_target = np.ones(cover.size, dtype=bool)
        is_target[np.cumsum(lengths) - 1] = False
        is_target[-1] = False
        np.testing.assert_array_equal(cover, is_target.astype(np.int64))


def _ranks(counts: np.ndarray) -> np.ndarray:
    return np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)


def test_pack_tails_rows_are_whole_seeded_and_tight() -> None:
    rng = np.random.default_rng(7)
    targets = rng.integers(1, 256, 20_000)
    starts = np.cumsum(targets + 1) - targets - 1
    a = pack_tails(starts, targets, 256, np.random.default_rng(1))
    b = pack_tails(starts, targets, 256, np.random.default_rng(1))
    c = pack_tails(starts, targets, 256, np.random.default_rng(2))
    np.testing.assert_array_equal(a.starts, b.starts)
    assert not np.array_equal(a.starts, c.starts)  # the seed breaks ties
    assert check_rows(a.starts, a.targets, 256) is None
    assert a.rows * 256 == int(targets.sum()) + a.padding
    assert a.pieces == targets.size
    assert a.padding < 0.01 * int(targets.sum())  # the target: under 1% padding
    ptr = row_pointers(a.targets, 256)
    assert ptr.size == a.rows + 1
    assert int(ptr[-1]) == a.starts.size
    real = np.sort(a.starts[a.starts != PAD_START])
    np.testing.assert_array_equal(real, np.sort(starts))


def test_cut_pieces_keeps_every_target() -> None:
    s, t = cut_pieces(np.array([0, 100]), np.array([20, 7]), 8)
    assert t.tolist() == [8, 8, 4, 7]
    assert s.tolist() == [0, 8, 16, 100]


def test_best_fit_decreasing_is_exact_bfd() -> None:
    sizes = np.array([5, 4, 3, 3, 2, 2, 1])
    bins, n = best_fit_decreasing(sizes, 6)
    loads = np.bincount(bins, weights=sizes)
    assert n == 4
    assert loads.max() <= 6


def test_check_rows_finds_damage() -> None:
    assert check_rows(np.array([0, -1]), np.array([3, 5]), 8) is None
    assert "crosses" in (check_rows(np.array([0, 9, 20]), np.array([6, 6, 4]), 8) or "")
    assert "outside" in (check_rows(np.array([0, 9]), np.array([6, 10]), 8) or "")
    assert check_rows(np.array([-1, 0]), np.array([5, 3]), 8) is not None
    assert check_rows(np.array([0]), np.array([0]), 8) is not None


def test_constants_match_their_twins() -> None:
    assert IGNORE_LABEL == IGNORE_INDEX
    assert tailrows.SHARD_DIR == layout.SHARD_DIR


def test_old_manifest_without_tails_reads_as_drop(tmp_path: Path) -> None:
    root = _prepare(tmp_path, random_lengths(100, seed=2, hi=400))
    path = root / MANIFEST
    man = json.loads(path.read_text())
    del man["tails"]  # as written before --tails existed
    man["fingerprint"] = fingerprint(man)
    path.write_text(json.dumps(man))
    ds = open_dataset(root)
    assert ds.tails == "drop"
    assert ds.tail_index is None
    verify_dataset(root)


def test_rows_refuses_packed_rows(tmp_path: Path) -> None:
    root = _prepare(tmp_path, random_lengths(100, seed=2, hi=400), tails="pack")
    ds = open_dataset(root)
    ((T, first),) = ds.packed_from.items()
    ds.rows(T, np.arange(first))  # plain rows read as before
    with pytest.raises(UserError, match="packed tail row"):
        ds.rows(T, np.array([first]))


@pytest.mark.parametrize(
    ("kw", "msg"),
    [({"tails": "keep"}, "--tails"), ({"tail_len": 16}, "needs --tails pack"),
     ({"tails": "pack", "tail_len": 64}, "above --min-len"),
     ({"tails": "pack", "tail_len": 12}, "power of two")],
)  # fmt: skip
def test_bad_tail_options_are_user_errors(tmp_path: Path, kw: dict[str, object], msg: str) -> None:
    with pytest.raises(UserError, match=msg):
        TokensConfig(tokens=np.zeros(3, np.uint16), out=tmp_path, eos_id=0, min_len=32, **kw)  # type: ignore[arg-type]


def test_stats_show_the_tail_bucket(tmp_path: Path) -> None:
    root = _prepare(tmp_path, random_lengths(200, seed=4, hi=500), tails="pack")
    st = compute_stats(open_dataset(root))
    assert st["tails"] == "pack"
    assert st["tail"]["targets"] > 0
    assert st["dropped"]["tokens"] == 0
    assert st["dropped"]["padding"] == st["tail"]["padding"]
    assert st["kept_targets"] == st["num_tokens"] - st["num_documents"]
    assert sum(b["tokens"] for b in st["buckets"]) + st["tail"]["targets"] == st["kept_targets"]
    assert "tail 32" in format_stats(st)
