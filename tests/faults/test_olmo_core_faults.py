"""Attacks on the OLMo-core adapter: forged, foreign and missing states, another dataset, bad
arguments. Each is one UserError line naming what is wrong; nothing half-restored."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

pytest.importorskip("olmo_core")

from ddecomp import TokensConfig, UserError, open_dataset, prepare_tokens
from ddecomp.data.dataset import Dataset
from ddecomp.integrations.olmo_core import DDDataLoader
from tests._fixtures import EOS, identity_tokens, random_lengths

TPS = 512


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> tuple[Dataset, Dataset]:
    out = []
    for seed in (1, 2):
        root = tmp_path_factory.mktemp(f"ds{seed}")
        toks = identity_tokens(random_lengths(200, seed=seed, hi=300))
        prepare_tokens(TokensConfig(tokens=toks, out=root, eos_id=EOS, min_len=16, max_len=64))
        out.append(open_dataset(root))
    return out[0], out[1]


def _one_line(e: pytest.ExceptionInfo[UserError], *words: str) -> None:
    msg = str(e.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, (w, msg)


def _state_after(loader: DDDataLoader, k: int) -> dict[str, Any]:
    loader.reshuffle(1)
    it = iter(loader)
    for _ in range(k):
        next(it)
    return json.loads(json.dumps(loader.state_dict()))


def _olmo_vsl_state(s: dict[str, Any]) -> dict[str, Any]:  # OLMo-core's own loader's fields
    return {"dataset_fingerprint_version": "v2", "dataset_fingerprint": "abc",
            "batches_processed": 3, "tokens_processed": 1536, "seed": 0, "epoch": 1}  # fmt: skip


FORGED: list[tuple[str, Callable[[dict[str, Any]], Any], tuple[str, ...]]] = [
    ("not a mapping", lambda s: [s], ("list",)),
    ("OLMo-core's own VSL loader state", _olmo_vsl_state, ("no 'ddecomp' field",)),
    (
        "ddecomp field missing",
        lambda s: {k: v for k, v in s.items() if k != "ddecomp"},
        ("no 'ddecomp' field",),
    ),
    ("another seed", lambda s: {**s, "ddecomp": {**s["ddecomp"], "seed": 9}}, ("seed",)),
    (
        "another batch",
        lambda s: {**s, "ddecomp": {**s["ddecomp"], "tokens_per_step": 1024}},
        ("tokens_per_step",),
    ),
    (
        "another curriculum",
        lambda s: {**s, "ddecomp": {**s["ddecomp"], "curriculum": "uniform"}},
        ("curriculum",),
    ),
    ("negative step", lambda s: {**s, "ddecomp": {**s["ddecomp"], "step": -1}}, ("'step'",)),
    ("step as text", lambda s: {**s, "ddecomp": {**s["ddecomp"], "step": "3"}}, ("'step'",)),
    (
        "step past the epoch",
        lambda s: {**s, "ddecomp": {**s["ddecomp"], "step": 10**9}},
        ("outside epoch",),
    ),
    ("epoch True", lambda s: {**s, "ddecomp": {**s["ddecomp"], "epoch": True}}, ("'epoch'",)),
    ("ddecomp state not a mapping", lambda s: {**s, "ddecomp": "x"}, ("not a mapping",)),
]


@pytest.mark.parametrize(("name", "forge", "words"), FORGED, ids=[f[0] for f in FORGED])
def test_forged_state_is_refused_and_nothing_moves(
    two: tuple[Dataset, Dataset], name: str, forge: Callable[[dict[str, Any]], Any],
    words: tuple[str, ...],
) -> None:  # fmt: skip
    state = _state_after(DDDataLoader(two[0], global_batch_size=TPS), 3)
    fresh = DDDataLoader(two[0], global_batch_size=TPS)
    before = fresh.state_dict()
    with pytest.raises(UserError) as e:
        fresh.load_state_dict(forge(state))
    _one_line(e, *words)
    assert fresh.state_dict() == before  # nothing half-restored


def test_state_of_another_dataset_is_refused(two: tuple[Dataset, Dataset]) -> None:
    state = _state_after(DDDataLoader(two[0], global_batch_size=TPS), 2)
    with pytest.raises(UserError) as e:
        DDDataLoader(two[1], global_batch_size=TPS).load_state_dict(state)
    _one_line(e, "dataset", "checkpoint")


BAD_ARGS: list[tuple[str, dict[str, Any], tuple[str, ...]]] = [
    ("batch 0", {"global_batch_size": 0}, ("global_batch_size",)),
    ("batch True", {"global_batch_size": True}, ("global_batch_size",)),
    ("batch float", {"global_batch_size": 512.0}, ("global_batch_size",)),
    ("batch not a multiple", {"global_batch_size": 96}, ("tokens_per_step",)),
    (
        "batch not a multiple of the ranks",
        {"global_batch_size": 64, "dp_rank": 0, "dp_world_size": 2},
        ("tokens_per_step",),
    ),
    ("rank without world", {"global_batch_size": TPS, "dp_rank": 1}, ("together",)),
    (
        "rank outside world",
        {"global_batch_size": TPS, "dp_rank": 2, "dp_world_size": 2},
        ("rank 2",),
    ),
    ("world 0", {"global_batch_size": TPS, "dp_rank": 0, "dp_world_size": 0}, ("world_size",)),
    ("negative workers", {"global_batch_size": TPS, "num_workers": -1}, ("num_workers",)),
    ("unknown curriculum", {"global_batch_size": TPS, "curriculum": "nope"}, ("nope",)),
    ("total tokens float", {"global_batch_size": TPS, "total_tokens": 1e6}, ("total_tokens",)),
]


@pytest.mark.parametrize(("name", "kw", "words"), BAD_ARGS, ids=[b[0] for b in BAD_ARGS])
def test_bad_argument_is_one_line(
    two: tuple[Dataset, Dataset], name: str, kw: dict[str, Any], words: tuple[str, ...]
) -> None:
    with pytest.raises(UserError) as e:
        DDDataLoader(two[0], **kw)
    _one_line(e, *words)


@pytest.mark.parametrize("epoch", [0, -1, True, "1", 1.0])
def test_bad_epoch_is_one_line(two: tuple[Dataset, Dataset], epoch: Any) -> None:
    with pytest.raises(UserError) as e:
        DDDataLoader(two[0], global_batch_size=TPS).reshuffle(epoch)
    _one_line(e, "epoch")


def test_iterating_before_reshuffle_and_changing_the_batch_are_refused(
    two: tuple[Dataset, Dataset],
) -> None:
    loader = DDDataLoader(two[0], global_batch_size=TPS)
    with pytest.raises(UserError) as e:
        next(iter(loader))
    _one_line(e, "reshuffle")
    for new in (2 * TPS, TPS // 2):  # OLMo-core's batch-size schedule would change the order
        with pytest.raises(UserError) as e:
            loader.global_batch_size = new
        _one_line(e, "global_batch_size", "plan")
    loader.global_batch_size = TPS  # the same size is fine
    assert loader.global_batch_size == TPS
