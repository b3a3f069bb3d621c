"""Blend on token-identity sources: every token names its source and its position."""

from __future__ import annotations

import collections
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ddecomp.data.blend import Blend
from ddecomp.data.dataset import Dataset, open_dataset
from ddecomp.errors import UserError
from ddecomp.loading.vsl import VSLLoader
from ddecomp.loading.world import World
from ddecomp.preparing.pipeline import TokensConfig, prepare_tokens
from tests._fixtures import identity_tokens, random_lengths

EOS = 1 << 31
VOCAB = EOS + 1
OFFSET = 1 << 24  # source b's tokens are its positions + OFFSET: a token names its source
TPS = 1024  # max_len 256 x world size 4


def _source(root: Path, n_docs: int, seed: int, offset: int, max_len: int = 256) -> np.ndarray:
    toks = identity_tokens(random_lengths(n_docs, seed, lo=3, hi=700), EOS).astype(np.int64)
    toks[toks != EOS] += offset
    prepare_tokens(
        TokensConfig(toks, root, eos_id=EOS, vocab_size=VOCAB, min_len=16, max_len=max_len)
    )
    return toks


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Dataset, np.ndarray]]:
    out = {}
    for name, n, seed, off, hi in (("a", 400, 1, 0, 256), ("b", 150, 2, OFFSET, 128)):
        root = tmp_path_factory.mktemp(name)
        toks = _source(root, n, seed, off, hi)
        out[name] = (open_dataset(root), toks)
    return out


def _owner(row: np.ndarray) -> tuple[str, int]:
    """(source, start) named by a row's first token (never EOS: rows start inside a document)."""
    first = int(row[0])
    return ("b", first - OFFSET) if first >= OFFSET else ("a", first)


def _check_rows(blend: Blend, L: int, epoch: int, toks: dict[str, np.ndarray]) -> list:
    """Every blend row of bucket L in ``epoch`` is its source's exact token slice; their owners."""
    n = blend.num_rows(L)
    rows = blend.for_epoch(epoch).rows(L, np.arange(n), out=np.empty((n, L + 1), np.int64))
    owners = []
    for row in rows:
        src, start = _owner(row)
        assert np.array_equal(row, toks[src][start : start + L + 1])
        owners.append((src, start))
    return owners


def test_factor_one_serves_every_row_of_every_source_once(sources) -> None:
    (a, ta), (b, tb) = sources["a"], sources["b"]
    blend = Blend([(a, 1.0), (b, 1.0)])
    assert (blend.min_len, blend.max_len) == (16, 256)  # the union of 16..256 and 16..128
    assert blend.bucket_rows[256] == a.bucket_rows[256]  # b has no 256 bucket
    for L in blend.bucket_rows:
        assert blend.bucket_rows[L] == a.bucket_rows.get(L, 0) + b.bucket_rows.get(L, 0)
        owners = _check_rows(blend, L, 0, {"a": ta, "b": tb})
        assert len(owners) == len(set(owners))
        want = {("a", int(s)) for s in a.row_starts(L)}
        if L in b.bucket_rows:
            want |= {("b", int(s)) for s in b.row_starts(L)}
        assert set(owners) == want
    s = blend.summary()
    assert [p["realised_factor"] for p in s["sources"]] == [1.0, 1.0]
    assert sum(p["share"] for p in s["sources"]) == pytest.approx(1.0)


def test_fractional_factor_rotates_rows_over_epochs(sources) -> None:
    (a, ta), (b, tb) = sources["a"], sources["b"]
    blend = Blend([(a, 2.0), (b, 0.3)], seed=5)
    L = 32
    n_a, n_b = a.bucket_rows[L], b.bucket_rows[L]
    m = round(0.3 * n_b)
    assert n_b > 10  # vacuity guard: a real window
    assert 0 < m < n_b
    assert blend.bucket_rows[L] == 2 * n_a + m
    counts: collections.Counter = collections.Counter()
    epochs = 7
    for e in range(epochs):
        owners = _check_rows(blend, L, e, {"a": ta, "b": tb})
        per_a = collections.Counter(o for o in owners if o[0] == "a")
        assert set(per_a.values()) == {2}  # whole copies: every row twice, every epoch
        b_rows = [o for o in owners if o[0] == "b"]
        assert len(b_rows) == len(set(b_rows)) == m  # a window never repeats a row
        counts.update(b_rows)
    # the windows tile one permutation: every row served floor or ceil of epochs * m / n times
    lo, hi = (epochs * m) // n_b, -(-(epochs * m) // n_b)
    assert {counts[("b", int(s))] for s in b.row_starts(L)} <= {lo, hi}
    assert sum(counts.values()) == epochs * m


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 40),
    factor=st.floats(0.01, 3.5),
    epochs=st.integers(1, 9),
    seed=st.integers(0, 2**31),
)
def test_source_rows_counts_property(n: int, factor: float, epochs: int, seed: int) -> None:
    """For any bucket size, factor and number of epochs, each row is served floor or ceil of the
    exact expectation, and every index maps inside the source."""

    class _Fake(Dataset):
        def __init__(self) -> None:  # only what Blend reads; no files
            self.bucket_rows = {16: n}
            self.min_len = self.max_len = 16
            self.eos_id, self.bos_id, self.vocab_size = 0, None, 10
            self.dtype = np.dtype(np.uint16)
            self.fingerprint, self.root = "fake", Path("fake")
            self.token_base = np.zeros(1, dtype=np.int64)
            self.packed_lengths: tuple[int, ...] = ()  # no tail rows
            self.manifest = {"tokenizer": {"vocab_size": 10, "eos_id": 0}, "convention": "x"}

    blend = Blend([(_Fake(), factor)], seed=seed)
    whole, m = int(factor), round((factor - int(factor)) * n)
    assert blend.bucket_rows[16] == whole * n + m
    counts = np.zeros(n, dtype=np.int64)
    for e in range(epochs):
        src, row = blend.source_rows(16, np.arange(blend.bucket_rows[16]), e)
        assert (src == 0).all()
        assert row.min(initial=0) >= 0
        assert row.max(initial=0) < n
        counts += np.bincount(row, minlength=n)
    total = epochs * m
    assert counts.sum() == epochs * whole * n + total
    extra = counts - epochs * whole
    assert set(extra.tolist()) <= {total // n, -(-total // n)}


def test_from_shares_matches_shares_and_repeats_nothing(sources) -> None:
    (a, _), (b, _) = sources["a"], sources["b"]
    blend = Blend.from_shares({a.root: 0.5, b.root: 0.5})
    assert max(blend.factors) == 1.0  # the limiting source once, the other sub-sampled
    assert min(blend.factors) < 1.0
    s = blend.summary()
    shares = [p["share"] for p in s["sources"]]
    # rounding moves each bucket by at most half a row: bounded by sum over buckets of L / 2
    slack = sum(L / 2 for L in blend.bucket_rows) / s["served_targets"]
    assert shares == pytest.approx([0.5, 0.5], abs=slack)
    three = Blend.from_shares([(a, 3), (b, 1)])
    got = [p["share"] for p in three.summary()["sources"]]
    assert got == pytest.approx([0.75, 0.25], abs=slack * 2)
    with pytest.raises(UserError, match="positive sum"):
        Blend.from_shares([(a, 0), (b, 0)])


def test_loader_over_a_blend_covers_rows_once_across_ranks_and_resumes(sources) -> None:
    (a, ta), (b, tb) = sources["a"], sources["b"]
    blend = Blend([(a, 1.0), (b, 0.6)], seed=3)
    W = 4
    per_rank = [
        list(VSLLoader(blend, tokens_per_step=TPS, cycles=2, seed=9, world=World(r, W)))
        for r in range(W)
    ]
    steps = len(per_rank[0])
    assert steps > 10
    seen = []
    for r in range(W):
        for batch in per_rank[r]:
            L = batch["seq_len"]
            full = torch.cat([batch["input_ids"], batch["labels"][:, -1:]], dim=1).numpy()
            for row in full:
                src, start = _owner(row)
                assert np.array_equal(row, {"a": ta, "b": tb}[src][start : start + L + 1])
                seen.append((L, src, start))
    assert len(seen) == len(set(seen))  # no row twice in the epoch, across ranks
    assert {s for _, s, _ in seen} == {"a", "b"}
    # resume from every step of rank 1 equals the uninterrupted run
    ref = per_rank[1]
    for k in range(0, steps, 3):
        it = VSLLoader(blend, tokens_per_step=TPS, cycles=2, seed=9, world=World(1, W))
        for _ in zip(range(k), it, strict=False):
            pass
        state = json.loads(json.dumps(it.state_dict()))
        again = VSLLoader(Blend([(a, 1.0), (b, 0.6)], seed=3), tokens_per_step=TPS, cycles=2,
                          seed=9, world=World(1, W))  # fmt: skip
        again.load_state_dict(state)
        rest = list(again)
        assert [x["step"] for x in rest] == list(range(k, steps))
        for x, y in zip(rest, ref[k:], strict=True):
            assert torch.equal(x["input_ids"], y["input_ids"])
    other = VSLLoader(Blend([(a, 1.0), (b, 0.5)], seed=3), tokens_per_step=TPS, cycles=2, seed=9)
    with pytest.raises(UserError, match="dataset"):
        other.load_state_dict(VSLLoader(blend, tokens_per_step=TPS, cycles=2, seed=9).state_dict())


def test_next_epoch_serves_the_next_window(sources) -> None:
    (a, _), (b, _) = sources["a"], sources["b"]
    blend = Blend([(a, 0.0), (b, 0.5)], seed=1)
    loader = VSLLoader(blend, tokens_per_step=512, cycles=1, seed=0)
    epoch0 = {tuple(r[:2].tolist()) for x in loader for r in x["input_ids"]}
    epoch1 = {tuple(r[:2].tolist()) for x in loader for r in x["input_ids"]}  # iterates epoch 1
    assert loader.state_dict()["epoch"] == 1
    assert len(epoch0) > 50
    # two windows of m = round(n / 2) rows overlap only where 2m > n (odd n): one row per bucket
    overlap = sum(max(0, 2 * round(0.5 * n) - n) for n in b.bucket_rows.values())
    assert len(epoch0 & epoch1) <= overlap < len(epoch0) // 10
    # a resume inside epoch 1 serves epoch 1's windows, as the uninterrupted run did
    ref = [
        x["input_ids"] for x in VSLLoader(blend, tokens_per_step=512, cycles=1, seed=0)
    ]  # epoch 0
    again = VSLLoader(blend, tokens_per_step=512, cycles=1, seed=0)
    again.set_epoch(1)
    whole_epoch1 = [x["input_ids"] for x in again]
    k = len(whole_epoch1) // 2
    cut = VSLLoader(blend, tokens_per_step=512, cycles=1, seed=0)
    cut.set_epoch(1)
    for _ in zip(range(k), cut, strict=False):
        pass
    resumed = VSLLoader(blend, tokens_per_step=512, cycles=1, seed=0)
    resumed.load_state_dict(json.loads(json.dumps(cut.state_dict())))
    rest = [x["input_ids"] for x in resumed]
    assert len(rest) == len(whole_epoch1) - k > 0
    assert all(torch.equal(x, y) for x, y in zip(rest, whole_epoch1[k:], strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(ref, whole_epoch1, strict=False))


def test_blend_pickles_for_workers_and_serves_the_same(sources) -> None:
    (a, _), (b, _) = sources["a"], sources["b"]
    blend = Blend([(a, 1.0), (b, 0.7)], seed=2)
    back = pickle.loads(pickle.dumps(blend))
    assert back.fingerprint == blend.fingerprint
    idx = np.arange(blend.num_rows(64))
    assert np.array_equal(back.for_epoch(3).rows(64, idx), blend.for_epoch(3).rows(64, idx))
    zero = [x["input_ids"] for x in VSLLoader(blend, tokens_per_step=TPS, seed=4)]
    two = [
        x["input_ids"]
        for x in VSLLoader(blend, tokens_per_step=TPS, seed=4, world=World(num_workers=2))
    ]
    assert len(zero) == len(two) > 0
    assert all(torch.equal(x, y) for x, y in zip(zero, two, strict=True))


def test_refuses_what_cannot_blend(sources, tmp_path: Path) -> None:
    (a, _), (b, _) = sources["a"], sources["b"]
    with pytest.raises(UserError, match="at least one source"):
        Blend([])
    with pytest.raises(UserError, match=r"factor -1\.0 must be a finite number >= 0"):
        Blend([(a, 1.0), (b, -1.0)])
    with pytest.raises(UserError, match="not Blend"):
        Blend([(Blend([(a, 1.0)]), 1.0)])  # type: ignore[list-item]
    with pytest.raises(UserError, match="every blend factor is 0"):
        Blend([(a, 0.0), (b, 0.0)])
    odd = tmp_path / "odd"
    odd_toks = identity_tokens(random_lengths(50, 3, lo=3, hi=300), EOS)
    prepare_tokens(
        TokensConfig(odd_toks, odd, eos_id=EOS, vocab_size=VOCAB + 7, min_len=16, max_len=256)
    )
    with pytest.raises(UserError, match=r"tokenizer vocab_size is 2147483656, but 2147483649"):
        Blend({a.root: 1.0, odd: 1.0})
    with pytest.raises(KeyError, match="no bucket of length 8"):
        Blend([(a, 1.0)]).num_rows(8)
    with pytest.raises(IndexError, match="out of range"):
        Blend([(a, 1.0)]).for_epoch(0).rows(16, [10**9])


def test_baselines_see_whole_documents_k_times_plus_a_seeded_subset(sources) -> None:
    from ddecomp.loading.concat import ConcatChunkLoader
    from ddecomp.loading.pack import PackedLoader

    (a, ta), (b, tb) = sources["a"], sources["b"]
    blend = Blend([(a, 2.0), (b, 0.4)], seed=6)
    starts, ends = blend.document_bounds()
    seen: collections.Counter = collections.Counter()
    stream = []
    for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
        doc = blend.tokens(s, e)
        src, at = _owner(doc)
        own = {"a": ta, "b": tb}[src]
        assert np.array_equal(doc, own[at : at + doc.size])
        assert doc[-1] == EOS
        assert np.count_nonzero(doc == EOS) == 1  # one whole document
        seen[(src, at)] += 1
        stream.append(doc)
    n_a, n_b = a.num_documents, b.num_documents
    per_a = [v for (src, _), v in seen.items() if src == "a"]
    per_b = [v for (src, _), v in seen.items() if src == "b"]
    assert len(per_a) == n_a
    assert set(per_a) == {2}
    assert len(per_b) == round(0.4 * n_b) > 10
    assert set(per_b) == {1}
    assert [d["documents"] for d in blend.document_summary()] == [2 * n_a, round(0.4 * n_b)]
    # concat-and-chunk over the blend serves exact chunks of the blend's document stream
    flat = np.concatenate(stream)
    L = 256
    chunks = {tuple(flat[i * L : i * L + L + 1].tolist()) for i in range((flat.size - 1) // L)}
    rows = []
    for batch in ConcatChunkLoader(blend, seq_len=L, tokens_per_step=TPS):
        full = torch.cat([batch["input_ids"], batch["labels"][:, -1:]], dim=1)
        rows += [tuple(r) for r in full.tolist()]
    assert len(rows) == len(set(rows)) > 100
    assert set(rows) <= chunks
    packed = PackedLoader(blend, seq_len=L, tokens_per_step=TPS)
    assert packed.summary()["documents"] == 2 * n_a + round(0.4 * n_b)
    assert sum(x["input_ids"].numel() for x in packed) > 0
