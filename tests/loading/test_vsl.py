"""VSLLoader on token-identity datasets: token value = its position in the token file."""

import json

import numpy as np
import pytest
import torch

from ddecomp.data.dataset import open_dataset
from ddecomp.errors import UserError
from ddecomp.loading.vsl import VSLLoader
from ddecomp.loading.world import World
from ddecomp.preparing.pipeline import TokensConfig, prepare_tokens
from tests._fixtures import free_port, random_lengths
from tests._fixtures import identity_tokens as fixture_tokens

EOS = 1 << 31
TPS = 2048  # max_len 256 x world size 8


def identity_tokens(n_docs: int, seed: int) -> np.ndarray:
    return fixture_tokens(random_lengths(n_docs, seed, lo=3, hi=700), EOS)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    toks = identity_tokens(700, seed=1)
    root = tmp_path_factory.mktemp("vsl")
    prepare_tokens(TokensConfig(toks, root, eos_id=EOS, min_len=16, max_len=256, overwrite=True))
    return open_dataset(root), toks


@pytest.fixture(scope="module")
def other(tmp_path_factory):
    root = tmp_path_factory.mktemp("vsl2")
    prepare_tokens(
        TokensConfig(identity_tokens(60, seed=2), root, eos_id=EOS, min_len=16, max_len=256)
    )
    return open_dataset(root)


def served(batches, toks):
    """(L, row start) of every row; asserts every row is the right slice of the token file."""
    out = []
    for b in batches:
        L = b["seq_len"]
        assert b["input_ids"].shape == b["labels"].shape == (b["input_ids"].shape[0], L)
        assert b["input_ids"].dtype == torch.int64
        full = torch.cat([b["input_ids"], b["labels"][:, -1:]], dim=1).numpy()
        assert torch.equal(b["input_ids"][:, 1:], b["labels"][:, :-1])
        for row in full:
            start = int(row[0])  # a row never starts on a document's EOS
            assert np.array_equal(row, toks[start : start + L + 1])
            out.append((L, start))
    return out


def vsl(ds, tps=TPS, rank=0, world_size=1, workers=0, **kw):
    """A VSLLoader for ``rank`` of ``world_size`` with ``workers`` DataLoader processes."""
    return VSLLoader(
        ds, tokens_per_step=tps, world=World(rank, world_size, num_workers=workers), **kw
    )


def run(ds, world_size, rank, workers=0, **kw):
    kw = {"curriculum": "grow-p2", "cycles": 3, "seed": 7, **kw}
    return list(vsl(ds, TPS, rank, world_size, workers, **kw))


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("world_size", [1, 2, 4, 8])
def test_ranks_cover_every_row_once_with_one_length_per_step(data, world_size, workers):
    ds, toks = data
    per_rank = [run(ds, world_size, r, workers) for r in range(world_size)]
    loader = vsl(ds, TPS, 0, world_size, curriculum="grow-p2", cycles=3, seed=7)
    S = len(loader)
    assert S > 20
    for batches in per_rank:
        assert [b["step"] for b in batches] == list(range(S))
        assert all(b["input_ids"].numel() == TPS // world_size for b in batches)
    lengths = np.array([[b["seq_len"] for b in batches] for batches in per_rank])
    assert (lengths == lengths[0]).all()
    assert len(set(lengths[0].tolist())) == 5  # all buckets 16..256 appear
    rows = [r for batches in per_rank for r in served(batches, toks)]
    assert len(rows) == len(set(rows))  # no row twice in the epoch
    plan = loader.plan
    expect = set()
    for L in plan.lengths:
        starts = ds.row_starts(L)
        left = set(starts[plan.left_out_rows(L)].tolist())
        assert len(left) == loader.summary()["buckets"][plan.lengths.index(L)]["rows_left_out"]
        expect |= {(L, int(s)) for s in starts.tolist() if s not in left}
    assert set(rows) == expect
    # the global batch of every step is the same whatever the world size
    single = served(run(ds, 1, 0), toks)
    by_step = [
        [r for rk in range(world_size) for r in served([per_rank[rk][s]], toks)] for s in range(S)
    ]
    assert [r for step in by_step for r in step] == single


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_from_every_step_equals_the_uninterrupted_run(data, workers):
    ds, toks = data
    ref_loader = vsl(ds, TPS, 1, 2, workers, curriculum="grow-p2", cycles=2, seed=3)
    ref, states = [], []
    for b in ref_loader:
        ref.append(served([b], toks))
        states.append(json.loads(json.dumps(ref_loader.state_dict())))
    assert len(ref) == len(ref_loader) > 20
    assert states[-1]["step"] == len(ref)
    for k in range(len(ref) - 1):
        resumed = vsl(ds, TPS, 1, 2, workers, curriculum="grow-p2", cycles=2, seed=3)
        resumed.load_state_dict(states[k])
        rest = [served([b], toks) for b in resumed]
        assert rest == ref[k + 1 :], k
    # resumed at the end of the epoch: the next iteration is the next epoch
    resumed = vsl(ds, TPS, 1, 2, workers, curriculum="grow-p2", cycles=2, seed=3)
    resumed.load_state_dict(states[-1])
    assert resumed.step == len(resumed)
    nxt = list(resumed)
    assert len(nxt) == len(ref)
    assert {b["epoch"] for b in nxt} == {1}


def test_break_mid_epoch_keeps_the_exact_position_with_workers(data):
    ds, toks = data
    full = [served([b], toks) for b in vsl(ds, TPS, 0, 1, 2)]
    loader = vsl(ds, TPS, 0, 1, 2)
    got = []
    for i, b in enumerate(loader):
        got.append(served([b], toks))
        if i == 6:
            break
    assert loader.state_dict()["step"] == 7
    got += [served([b], toks) for b in loader]  # the same loader continues where it stopped
    assert got == full


def test_elastic_resume_from_4_to_2_ranks_continues_the_global_order(data):
    ds, toks = data
    loaders4 = [vsl(ds, TPS, r, 4) for r in range(4)]
    its = [iter(ld) for ld in loaders4]
    k = 9
    for _ in range(k):
        for it in its:
            next(it)
    state = loaders4[0].state_dict()
    assert state["step"] == k
    assert state["world_size"] == 4
    rest4 = [[served([b], toks) for b in it] for it in its]  # uninterrupted 4-rank run
    loaders2 = [vsl(ds, TPS, r, 2) for r in range(2)]
    for ld in loaders2:
        ld.load_state_dict(state)
    rest2 = [[served([b], toks) for b in ld] for ld in loaders2]
    assert len(rest2[0]) == len(loaders2[0]) - k > 0
    glob4 = [r for rank_rows in zip(*rest4, strict=True) for rows in rank_rows for r in rows]
    glob2 = [r for rank_rows in zip(*rest2, strict=True) for rows in rank_rows for r in rows]
    assert glob4 == glob2


def test_same_seed_same_batches_other_seed_other_order(data):
    ds, toks = data
    a = served(run(ds, 2, 1, seed=5), toks)
    b = served(run(ds, 2, 1, seed=5), toks)
    c = served(run(ds, 2, 1, seed=6), toks)
    assert len(a) > 0
    assert a == b
    assert a != c


def test_epochs_reshuffle_and_iteration_moves_on_after_an_epoch(data):
    ds, toks = data
    loader = vsl(ds, seed=1)
    e0 = served(list(loader), toks)
    assert loader.state_dict()["epoch"] == 0
    e1 = served(list(loader), toks)  # iterating again serves the next epoch
    assert loader.epoch == 1
    assert len(e0) == len(e1) == len(set(e1)) > 0  # other remainder rows left out, same count
    assert sorted(L for L, _ in e0) == sorted(L for L, _ in e1)
    assert e0 != e1
    loader.set_epoch(1)  # the current epoch: keeps the position (at its end)
    assert loader.step == len(loader)
    loader.set_epoch(0)
    assert served(list(loader), toks) == e0


def test_refusals_name_the_field_and_both_values(data, other):
    ds, _ = data
    state = vsl(ds, seed=0).state_dict()
    cases = [
        (vsl(ds, seed=1), "seed is 0 in the checkpoint but 1"),
        (
            vsl(ds, curriculum="uniform"),
            "curriculum is 'grow-p2' in the checkpoint but 'uniform'",
        ),
        (
            vsl(ds, 2 * TPS),
            "tokens_per_step is 2048 in the checkpoint but 4096",
        ),
        (vsl(other), "dataset is '"),
        (vsl(ds, cycles=2), "cycles is 8 in the checkpoint but 2"),
    ]
    for loader, msg in cases:
        with pytest.raises(UserError, match=msg) as e:
            loader.load_state_dict(state)
        assert "\n" not in str(e.value)
    with pytest.raises(UserError, match="version"):
        vsl(ds).load_state_dict({**state, "version": 99})


def test_tokens_per_step_that_does_not_divide_lists_values_that_work(data):
    ds, _ = data
    with pytest.raises(
        UserError,
        match=r"tokens_per_step 3000 is not a multiple of max length 256 x world size 3 = 768; "
        r"use a multiple of 768, e.g. 2304, 3072, 6144",
    ):
        vsl(ds, 3000, 0, 3)
    assert len(vsl(ds, 768 * 2, 2, 3)) > 0  # a world size of 3 works
    with pytest.raises(UserError, match="more than any bucket holds"):
        vsl(ds, 256 * 1024 * 1024)


def test_summary_reports_remainder_and_rank_share(data):
    ds, _ = data
    s = vsl(ds, TPS, 1, 4).summary()
    json.dumps(s)
    assert s["tokens_per_rank_step"] == TPS // 4
    assert s["rows_left_out"] > 0
    assert s["steps"] == sum(b["steps"] for b in s["buckets"])
    assert [b["rows_per_rank"] for b in s["buckets"]] == [32, 16, 8, 4, 2]


def _dist_worker(rank, root, port, out):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    ds = open_dataset(root)
    loader = VSLLoader(
        ds, tokens_per_step=TPS, cycles=2
    )  # rank and world size from torch.distributed
    rows = [(b["seq_len"], int(r)) for b in loader for r in b["input_ids"][:, 0]]
    lens = torch.tensor([b["seq_len"] for b in VSLLoader(ds, tokens_per_step=TPS, cycles=2)])
    gathered = [torch.zeros_like(lens) for _ in range(2)]
    dist.all_gather(gathered, lens)
    assert torch.equal(gathered[0], gathered[1])
    with open(f"{out}/{rank}.json", "w") as f:
        json.dump(rows, f)
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_real_gloo_processes_split_the_epoch(data, tmp_path):
    import torch.multiprocessing as mp

    ds, _ = data
    port = free_port()
    mp.spawn(_dist_worker, args=(str(ds.root), port, str(tmp_path)), nprocs=2)
    r0, r1 = (json.loads((tmp_path / f"{r}.json").read_text()) for r in (0, 1))
    assert len(r0) == len(r1) > 0
    assert not {tuple(x) for x in r0} & {tuple(x) for x in r1}
    single = [(b["seq_len"], int(r)) for b in vsl(ds, cycles=2) for r in b["input_ids"][:, 0]]
    assert sorted(map(tuple, r0 + r1)) == sorted(single)
