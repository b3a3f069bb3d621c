"""Concat-and-chunk and BFD packing on token-identity data (token value = file position)."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ddecomp.binpack import best_fit_decreasing
from ddecomp.data.dataset import open_dataset
from ddecomp.errors import UserError
from ddecomp.loading.concat import ConcatChunkLoader
from ddecomp.loading.pack import PackedLoader, document_pieces
from ddecomp.loading.protocols import IGNORE_INDEX
from ddecomp.loading.world import World
from ddecomp.preparing.pipeline import TokensConfig, prepare_tokens
from tests._fixtures import identity_tokens

EOS = 1 << 31
L = 64


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    rng = np.random.default_rng(4)
    lens = np.exp(rng.uniform(np.log(1), np.log(400), size=500)).astype(np.int64)
    toks = identity_tokens(lens, EOS)
    root = tmp_path_factory.mktemp("base")
    # a validation split makes the train documents non-contiguous in the token file
    prepare_tokens(TokensConfig(toks, root, eos_id=EOS, min_len=16, max_len=64, val_fraction=0.2))
    ds = open_dataset(root)
    assert 0 < ds.num_documents < lens.size
    return ds, toks


def stream(ds):
    return np.concatenate(list(ds.documents()))


def full_rows(b):
    return np.concatenate([b["input_ids"].numpy(), b["labels"].numpy()[:, -1:]], axis=1)


@pytest.mark.parametrize(("world_size", "workers"), [(1, 0), (2, 0), (4, 2)])
def test_concat_chunk_rows_are_the_stream_cut_with_overlap(data, world_size, workers):
    ds, _ = data
    s = stream(ds)
    where = {int(t): i for i, t in enumerate(s) if t != EOS}  # token -> stream index
    tps = L * 8
    loaders = [
        ConcatChunkLoader(
            ds,
            seq_len=L,
            tokens_per_step=tps,
            seed=2,
            world=World(r, world_size, num_workers=workers),
        )
        for r in range(world_size)
    ]
    seen = []
    for ld in loaders:
        for b in ld:
            assert b["input_ids"].shape == (8 // world_size, L)
            for row in full_rows(b):
                j = int(np.flatnonzero(row != EOS)[0])
                k = where[int(row[j])] - j
                assert k % L == 0
                assert np.array_equal(row, s[k : k + L + 1])
                seen.append(k // L)
    n = (s.size - 1) // L
    summ = loaders[0].summary()
    assert summ["rows"] == n
    assert len(seen) == len(set(seen)) == n - summ["rows_left_out"] > 0
    assert summ["tail_targets_dropped"] == s.size - 1 - n * L


def test_concat_doc_mask_masks_cross_document_labels(data):
    ds, _ = data
    ld = ConcatChunkLoader(ds, seq_len=L, tokens_per_step=L * 4, doc_mask=True, seed=0)
    masked = 0
    for b in ld:
        x, y = b["input_ids"].numpy(), b["labels"].numpy()
        assert np.array_equal(y == IGNORE_INDEX, x == EOS)  # only a document's last token is masked
        masked += int((y == IGNORE_INDEX).sum())
        cu = b["cu_seqlens"].numpy()
        assert cu.dtype == np.int32
        assert cu[0] == 0
        assert cu[-1] == x.size
        assert (np.diff(cu) > 0).all()
        starts = set(cu[:-1].tolist())
        flat = x.ravel()
        for i in range(flat.size):  # a segment starts at each row start and after each EOS
            assert (i in starts) == (i % L == 0 or flat[i - 1] == EOS)
        pos = b["position_ids"].numpy().ravel()
        seg = np.searchsorted(cu, np.arange(flat.size), side="right") - 1
        assert np.array_equal(pos, np.arange(flat.size) - cu[seg])
        assert b["max_seqlen"] == int(np.diff(cu).max())
    assert masked > 0
    assert ld.summary()["cross_document_labels_masked"] >= masked


def test_packed_trains_every_document_target_exactly_once(data):
    ds, toks = data
    ld = PackedLoader(
        ds, seq_len=L, tokens_per_step=L, seed=1
    )  # one row per step: nothing left out
    assert ld.summary()["rows_left_out"] == 0
    inputs = []
    pad = 0
    for b in ld:
        x, y = b["input_ids"].numpy()[0], b["labels"].numpy()[0]
        ok = y != IGNORE_INDEX
        assert np.array_equal(y[ok], toks[x[ok].astype(np.int64) + 1])  # the next token
        inputs.append(x[ok])
        cu = b["cu_seqlens"].numpy()
        assert cu[-1] == L
        pos = b["position_ids"].numpy()[0]
        seg = np.searchsorted(cu, np.arange(L), side="right") - 1
        assert np.array_equal(pos, np.arange(L) - cu[seg])
        pad += int(np.count_nonzero(full_rows(b)[0] == EOS)) - int(np.count_nonzero(x[ok] == EOS))
    got = np.sort(np.concatenate(inputs))
    starts, ends = ds.document_bounds()
    want = np.sort(np.concatenate([np.arange(a, e - 1) for a, e in zip(starts, ends, strict=True)]))
    assert got.size > 1000
    assert np.array_equal(got, want)  # every within-document target once, none across documents
    s = ld.summary()
    assert s["trained_targets"] == want.size
    assert s["trained_targets"] + s["pieces"] + s["padding_tokens"] == s["rows"] * (L + 1)
    assert pad >= s["padding_tokens"]  # padding is EOS
    assert 0 <= s["padding_share"] < 0.1


def naive_bfd(sizes, cap):
    free: list[int] = []
    for s in sorted(sizes, reverse=True):
        fits = [i for i, f in enumerate(free) if f >= s]
        if fits:
            i = min(fits, key=lambda i: free[i])
            free[i] -= s
        else:
            free.append(cap - s)
    return sorted(free)


@settings(max_examples=150, deadline=None)
@given(cap=st.integers(1, 40), data=st.data())
def test_bfd_matches_one_at_a_time_best_fit_decreasing(cap, data):
    sizes = np.array(data.draw(st.lists(st.integers(1, cap), max_size=80)), dtype=np.int64)
    bins, n = best_fit_decreasing(sizes, cap)
    fill = np.bincount(bins, weights=sizes, minlength=n) if sizes.size else np.zeros(0)
    assert (fill <= cap).all()
    assert sorted((cap - fill).astype(int).tolist()) == naive_bfd(sizes.tolist(), cap)


@given(st.lists(st.integers(1, 300), min_size=1, max_size=30), st.integers(1, 40))
def test_document_pieces_cover_every_target_once(lens, sl):
    lens_a = np.array(lens, dtype=np.int64)
    starts = np.r_[0, np.cumsum(lens_a)[:-1]]
    ps, sz = document_pieces(starts, starts + lens_a, sl)
    assert (sz >= 2).all()
    assert (sz <= sl + 1).all()
    targets = np.concatenate([np.arange(a, a + m - 1) for a, m in zip(ps, sz, strict=True)] + [[]])
    want = np.concatenate([np.arange(a, a + n - 1) for a, n in zip(starts, lens_a, strict=True)])
    assert np.array_equal(np.sort(targets), np.sort(want))


@pytest.mark.parametrize("cls", [ConcatChunkLoader, PackedLoader])
def test_baseline_resume_and_refusals(data, cls):
    ds, _ = data
    ref_ld = cls(ds, seq_len=L, tokens_per_step=2 * L, seed=3, world=World(1, 2))
    ref, states = [], []
    for b in ref_ld:
        ref.append(b["input_ids"].numpy().copy())
        states.append(json.loads(json.dumps(ref_ld.state_dict())))
    assert len(ref) > 5
    for k in (0, 3, len(ref) - 2):
        ld = cls(ds, seq_len=L, tokens_per_step=2 * L, seed=3, world=World(1, 2))
        ld.load_state_dict(states[k])
        rest = [b["input_ids"].numpy() for b in ld]
        assert len(rest) == len(ref) - k - 1
        assert all(np.array_equal(a, b) for a, b in zip(rest, ref[k + 1 :], strict=True))
    with pytest.raises(UserError, match="seed is 3 in the checkpoint but 4"):
        cls(ds, seq_len=L, tokens_per_step=2 * L, seed=4).load_state_dict(states[0])
    with pytest.raises(UserError, match="not a multiple of max length 64 x world size 3"):
        cls(ds, seq_len=L, tokens_per_step=2 * L, world=World(0, 3))


def test_concat_refuses_another_doc_mask(data):
    ds, _ = data
    state = ConcatChunkLoader(ds, seq_len=L, tokens_per_step=L).state_dict()
    with pytest.raises(UserError, match="doc_mask is False in the checkpoint but True"):
        ConcatChunkLoader(ds, seq_len=L, tokens_per_step=L, doc_mask=True).load_state_dict(state)
