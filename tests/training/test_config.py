"""The run and model configuration stand on their own: no data layer behind them."""

from __future__ import annotations

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
