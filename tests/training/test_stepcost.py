"""Fixed-shape step costs: the shapes they time, their validation, and the ideal they price."""

from __future__ import annotations

import pytest
import torch

from ddecomp.errors import UserError
from ddecomp.training.config import TrainConfig
from ddecomp.training.stepcost import ideal_step_cost, measure_step_costs, price_plan

CPU = torch.device("cpu")


def _cfg(**kw: object) -> TrainConfig:
    base: dict[str, object] = {"data": "-", "out": "-", "tokens_per_step": 256, "warmup": 1}
    base["tokens"] = 4 * 256
    return TrainConfig(**{**base, **kw})  # type: ignore[arg-type]


def test_one_fixed_shape_per_length_with_the_timed_samples() -> None:
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    got = measure_step_costs(_cfg(), 61, [64, 16, 64, 256], CPU, warmup=1, iters=3)
    assert torch.equal(torch.random.get_rng_state(), before)  # the caller's RNG is untouched
    assert list(got) == [16, 64, 256]  # each length once, shortest first
    assert [got[L]["rows"] for L in got] == [16, 4, 1]  # tokens_per_step / L rows
    for c in got.values():
        assert len(c["samples_s"]) == 3  # warm-up steps are not timed
        assert c["min_s"] <= c["median_s"]
        assert all(s > 0 for s in c["samples_s"])


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(UserError, match="iters >= 1"):
        measure_step_costs(_cfg(), 61, [16], CPU, iters=0)
    with pytest.raises(AssertionError):
        measure_step_costs(_cfg(), 61, [48], CPU, iters=1)  # 256 tokens are not rows of 48


def test_ideal_is_the_mean_price_of_the_steps() -> None:
    costs = {256: 0.2, 8192: 0.3}
    assert ideal_step_cost([256, 256, 8192, 256], costs) == pytest.approx(0.225)
    with pytest.raises(AssertionError, match="no steps"):
        ideal_step_cost([], costs)


def test_price_plan_against_the_same_steps_at_the_longest_length() -> None:
    p = price_plan({256: 3, 1024: 0, 8192: 1}, {256: 0.2, 8192: 0.3}, 8192)
    assert p["epoch_steps"] == 4
    assert p["dd_s"] == pytest.approx(0.9)
    assert p["baseline_s"] == pytest.approx(1.2)
    assert p["ratio"] == pytest.approx(0.75)
    with pytest.raises(AssertionError, match="no steps"):
        price_plan({256: 0}, {256: 0.2}, 256)
