"""OLMo-core's own Trainer trains on ddecomp's plan: lengths, rows, loss, and resume through its
checkpoints (a tiny OLMo-core transformer from its own config, CPU, one process)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip("olmo_core")

import ddecomp
from ddecomp.errors import UserError
from ddecomp.integrations.olmo_core import DDDataLoader
from tests.integrations._olmo import build_trainer, one_thread, recorder
from tests.training._corpus import TPS, make_dataset

STEPS, K = 16, 8  # the run, and the step its checkpoint is taken at


def _loader(ds: ddecomp.Dataset) -> DDDataLoader:
    return DDDataLoader(ds, global_batch_size=TPS, total_tokens=STEPS * TPS, seed=5)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The uninterrupted run (checkpoint at step K), then a run resumed from that checkpoint by a
    new Trainer, model and loader."""
    root = tmp_path_factory.mktemp("olmo")
    ds = ddecomp.open_dataset(make_dataset(root / "ds", n_tokens=60_000))
    out: dict[str, Any] = {"ds": ds, "root": root}
    with one_thread():
        cb, batches, losses = recorder()
        build_trainer(_loader(ds), root / "a", STEPS, ds.vocab_size, {"rec": cb},
                      save_interval=K).fit()  # fmt: skip
        out["full"] = (batches, losses)
        cb, batches, losses = recorder()
        build_trainer(_loader(ds), root / "b", STEPS, ds.vocab_size, {"rec": cb},
                      load_path=root / "a" / f"step{K}").fit()  # fmt: skip
        out["resumed"] = (batches, losses)
    return out


def test_trainer_trains_the_plans_lengths_and_rows_once(run: dict[str, Any]) -> None:
    ds, (batches, _) = run["ds"], run["full"]
    plan = _loader(ds).vsl.plan
    assert len(batches) == STEPS == len(plan)
    assert [b["input_ids"].shape[1] for b in batches] == plan.step_length.tolist()
    assert len(set(plan.step_length.tolist())) >= 3  # vacuity guard: a curriculum, not one length
    seen: set[tuple[int, int]] = set()
    for s, b in enumerate(batches):
        L = int(plan.step_length[s])
        idx = plan.rank_rows(s, 0, 1)
        assert b["input_ids"].numel() == TPS  # constant tokens per step
        rows = torch.from_numpy(ds.for_epoch(0).rows(L, idx).astype(np.int64))
        assert torch.equal(b["input_ids"], rows[:, :-1])  # token identity with the dataset
        assert torch.equal(b["labels"], rows[:, 1:])  # every target of the row, none shifted out
        seen.update((L, int(i)) for i in idx)
    assert len(seen) == sum(b["input_ids"].shape[0] for b in batches)  # no row twice


def test_trainer_loss_decreases(run: dict[str, Any]) -> None:
    losses = run["full"][1]
    assert sorted(losses) == list(range(1, STEPS + 1))
    first, last = (
        np.mean([losses[s] for s in (1, 2, 3)]),
        np.mean([losses[s] for s in (STEPS - 2, STEPS - 1, STEPS)]),
    )
    assert np.isfinite(last)
    assert last < first - 0.5, (first, last)


def test_resume_through_olmo_core_checkpoint_serves_the_same_batches(run: dict[str, Any]) -> None:
    full, full_losses = run["full"]
    resumed, resumed_losses = run["resumed"]
    assert len(resumed) == STEPS - K  # nothing replayed, nothing skipped
    for s, (got, want) in enumerate(zip(resumed, full[K:], strict=True), start=K + 1):
        assert set(got) == set(want), s
        for key in want:
            assert torch.equal(got[key], want[key]), f"step {s}: {key} differs after resume"
    assert sorted(resumed_losses) == list(range(K + 1, STEPS + 1))
    # model, optimizer and data restored: the same losses as the uninterrupted run
    np.testing.assert_allclose(
        [resumed_losses[s] for s in sorted(resumed_losses)],
        [full_losses[s] for s in sorted(resumed_losses)],
        rtol=1e-5,
    )


def test_a_checkpoint_of_another_dataset_is_refused_by_the_trainer(run: dict[str, Any]) -> None:
    root = run["root"]
    other = ddecomp.open_dataset(make_dataset(root / "other", n_tokens=60_000, seed=1))
    assert other.fingerprint != run["ds"].fingerprint
    with one_thread():
        trainer = build_trainer(_loader(other), root / "c", STEPS, other.vocab_size, {},
                                load_path=root / "a" / f"step{K}")  # fmt: skip
        with pytest.raises(UserError) as e:
            trainer.fit()
    assert "\n" not in str(e.value)
    assert "cannot resume: dataset" in str(e.value)
    assert not (root / "c" / f"step{STEPS}").exists()  # nothing trained, nothing saved
