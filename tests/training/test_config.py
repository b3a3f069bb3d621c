"""The run and model configuration stand on their own: no data layer behind them."""

from __future__ import annotations

import pytest

from ddecomp.errors import UserError
from ddecomp.training.config import TrainConfig
from tests.test_architecture import import_graph


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for dep in graph[todo.pop()] - seen:
            seen.add(dep)
            todo.append(dep)
    return seen


def test_the_config_imports_no_data_layer() -> None:
    graph = import_graph()
    deps = _reachable(graph, "ddecomp.training.config")
    assert "ddecomp.errors" in deps  # vacuity guard: the config's imports were really followed
    assert {d for d in deps if d.startswith(("ddecomp.data", "ddecomp.loading"))} == set()
    assert "ddecomp.data.blend" in _reachable(graph, "ddecomp.training.loop")  # the guard bites


def test_blend_weights_are_held_and_checked_where_the_data_is_opened() -> None:
    # One weight for two datasets is the data's business (open_sources), not the config's.
    cfg = TrainConfig(data=("a", "b"), out="run", shares=(1.0,))
    assert cfg.data_dirs == ("a", "b")
    assert cfg.shares == (1.0,)


def test_the_default_warmup_fits_every_run_length() -> None:
    # Issue 12 item 2: a fixed default of 50 refused every run of 50 steps or fewer.
    for steps in (1, 2, 9, 10, 50, 51, 64, 499, 500, 10_000):
        cfg = TrainConfig(data="d", out="r", tokens=steps * 16384, tokens_per_step=16384)
        assert cfg.warmup is not None
        assert 0 <= cfg.warmup < steps, steps
        assert cfg.warmup == min(50, steps // 10), steps
    assert TrainConfig(data="d", out="r", tokens=64 * 16384).warmup == 6  # the README's runs


def test_an_explicit_warmup_that_does_not_fit_is_still_an_error() -> None:
    with pytest.raises(
        UserError, match=r"--warmup 50 steps must be in \[0, 1\).*default \(0 here\)"
    ):
        TrainConfig(data="d", out="r", tokens=16384, tokens_per_step=16384, warmup=50)
    assert TrainConfig(data="d", out="r", tokens=16384 * 4, warmup=3).warmup == 3
