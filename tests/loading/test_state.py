"""Resume and loader state for every loader: exact at every step, and malformed states refused.

Small token-identity datasets (token = its stream position), so every batch is cheap and every
comparison is of real token ids.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ddecomp.data.blend import Blend
from ddecomp.data.dataset import Dataset, open_dataset
from ddecomp.errors import UserError
from ddecomp.loading.base import StepLoader
from ddecomp.loading.concat import ConcatChunkLoader
from ddecomp.loading.pack import PackedLoader
from ddecomp.loading.vsl import VSLLoader
from ddecomp.loading.world import World
from ddecomp.preparing.pipeline import TokensConfig, prepare_tokens
from tests._fixtures import assert_resume_equivalent, identity_tokens, random_lengths

EOS = 1 << 31
TPS = 512  # max_len 64 x world size 2 x 4


def _prepare(root: Path, seed: int, n_docs: int) -> Dataset:
    toks = identity_tokens(random_lengths(n_docs, seed, lo=3, hi=200), EOS)
    prepare_tokens(TokensConfig(toks, root, eos_id=EOS, min_len=8, max_len=64, overwrite=True))
    return open_dataset(root)


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> tuple[Dataset, Dataset]:
    base = tmp_path_factory.mktemp("state")
    return _prepare(base / "a", 11, 120), _prepare(base / "b", 12, 90)


Maker = Callable[[Dataset, Dataset], StepLoader]
W = World(rank=1, world_size=2)
MAKERS: dict[str, Maker] = {
    "vsl": lambda a, b: VSLLoader(a, tokens_per_step=TPS, cycles=2, seed=3, world=W),
    "vsl-blend": lambda a, b: VSLLoader(
        Blend([(a, 1.0), (b, 0.6)], seed=5), tokens_per_step=TPS, cycles=2, seed=3, world=W
    ),
    "concat": lambda a, b: ConcatChunkLoader(a, seq_len=64, tokens_per_step=TPS, seed=3, world=W),
    "concat-dm": lambda a, b: ConcatChunkLoader(
        a, seq_len=64, tokens_per_step=TPS, doc_mask=True, seed=3, world=W
    ),
    "pack": lambda a, b: PackedLoader(a, seq_len=64, tokens_per_step=TPS, seed=3, world=W),
    "pack-blend": lambda a, b: PackedLoader(
        Blend([(a, 1.0), (b, 0.5)], seed=5), seq_len=32, tokens_per_step=TPS // 2, world=W
    ),
}


@pytest.mark.parametrize("kind", sorted(MAKERS))
@pytest.mark.parametrize("epoch", [0, 1])
def test_restoring_at_every_step_serves_the_same_batches(
    sources: tuple[Dataset, Dataset], kind: str, epoch: int
) -> None:
    a, b = sources
    n = assert_resume_equivalent(lambda: MAKERS[kind](a, b), epoch=epoch)
    assert n >= 3


def test_a_blend_resumed_in_epoch_1_serves_epoch_1_rows(sources: tuple[Dataset, Dataset]) -> None:
    """Guards the helper: epoch 1 of a fractional blend differs from epoch 0, so a resume that
    silently served epoch 0's rows would fail the equivalence above."""
    a, b = sources
    loader = MAKERS["vsl-blend"](a, b)
    e0 = [x["input_ids"] for x in loader]
    e1 = [x["input_ids"] for x in loader]
    assert loader.epoch == 1
    assert len(e0) == len(e1) > 0
    assert any(x.shape != y.shape or not bool((x == y).all()) for x, y in zip(e0, e1, strict=True))


# ---- malformed states ---------------------------------------------------------------------------
def _valid_state(loader: StepLoader) -> dict[str, Any]:
    it = iter(loader)
    next(it)
    return dict(json.loads(json.dumps(loader.state_dict())))


@pytest.mark.parametrize("kind", ["vsl", "concat", "pack"])
def test_malformed_states_are_refused_naming_the_field(
    sources: tuple[Dataset, Dataset], kind: str
) -> None:
    a, b = sources
    loader = MAKERS[kind](a, b)
    state = _valid_state(loader)
    cases: list[tuple[Any, str]] = [
        ([("step", 1)], "not a mapping"),
        ("{}", "not a mapping"),
        ({k: v for k, v in state.items() if k != "version"}, "version None"),
        ({**state, "epoch": -1}, "'epoch' is -1"),
        ({**state, "step": -3}, "'step' is -3"),
        ({**state, "step": "4"}, "'step' is '4'"),
        ({**state, "step": 1.0}, "'step' is 1.0"),
        ({**state, "epoch": True}, "'epoch' is True"),
        ({**state, "epoch": None}, "'epoch' is None"),
        ({**state, "world_size": 0}, "'world_size' is 0"),
        ({**state, "step": 10**6}, "step 1000000 is outside epoch 0"),
        ({**state, "seed": "3"}, "seed is '3' in the checkpoint but 3"),
        ({**state, "seed": [3]}, r"seed is \[3\] in the checkpoint but 3"),
    ]
    for key in state:
        if key not in ("version", "order"):
            cases.append(({k: v for k, v in state.items() if k != key}, f"no field '{key}'"))
    # a state without an order was written with order 1 (numpy permutations): refused
    cases.append(({k: v for k, v in state.items() if k != "order"}, "row order is 1"))
    cases.append(({**state, "order": True}, "row order is True"))
    for bad, msg in cases:
        with pytest.raises(UserError, match=msg) as e:
            loader.load_state_dict(bad)
        assert "\n" not in str(e.value)
    loader.load_state_dict(state)  # the valid state still loads
    assert (loader.epoch, loader.step) == (0, 1)


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)


@pytest.mark.parametrize("kind", ["vsl", "vsl-blend", "concat-dm", "pack"])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_randomly_mutated_state_loads_or_raises_user_error(
    sources: tuple[Dataset, Dataset], kind: str, data: st.DataObject
) -> None:
    a, b = sources
    loader = _loader_cache(kind, a, b)
    state: dict[str, Any] = dict(_VALID[kind])
    keys = sorted(state)
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        what = data.draw(st.sampled_from(["drop", "set", "add", "near"]), label="what")
        key = data.draw(st.sampled_from(keys), label="key")
        if what == "drop":
            state.pop(key, None)
        elif what == "set":
            state[key] = data.draw(_JSON, label="value")
        elif what == "near" and isinstance(state.get(key), int):
            state[key] = state[key] + data.draw(st.integers(-3, 3), label="delta")
        else:
            state[data.draw(st.text(max_size=6), label="new key")] = data.draw(_JSON)
    error = None
    try:
        loader.load_state_dict(state)
    except UserError as e:  # anything else (KeyError, TypeError, ...) fails the test
        error = str(e)
    if error is not None:
        assert "\n" not in error
        return
    # accepted: the position is a valid one of the loader's order
    assert 0 <= loader.step <= loader.steps_in_epoch(loader.epoch)


_LOADERS: dict[str, StepLoader] = {}
_VALID: dict[str, dict[str, Any]] = {}


def _loader_cache(kind: str, a: Dataset, b: Dataset) -> StepLoader:
    """One loader per kind for all examples (load_state_dict replaces its whole position)."""
    if kind not in _LOADERS:
        _LOADERS[kind] = MAKERS[kind](a, b)
        _VALID[kind] = _valid_state(_LOADERS[kind])
    return _LOADERS[kind]


def test_baseline_state_keys_are_stable_and_json(sources: tuple[Dataset, Dataset]) -> None:
    a, b = sources
    for kind in ("concat", "concat-dm", "pack"):
        state = MAKERS[kind](a, b).state_dict()
        assert list(state)[:2] == ["version", "loader"]
        assert list(state)[-3:] == ["epoch", "step", "world_size"]
        assert json.loads(json.dumps(state)) == state
