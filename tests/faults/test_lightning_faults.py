"""Attacks on DDDataModule, the way a user hits them: a real Trainer, real checkpoint files.

Every answer is one line (a UserError naming what is wrong and what to do), never a traceback
from deep inside Lightning and never a silent restart of the epoch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("lightning")

from ddecomp.errors import UserError
from ddecomp.integrations.lightning import datamodule_class, place
from tests.integrations._lightning_run import (
    fit,
    make_data,
    make_loader,
    module_class,
    trainer,
)

Edit = Callable[[dict[str, Any]], None]


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A dataset and a mid-epoch checkpoint (step 4 of a 24-step plan)."""
    root = tmp_path_factory.mktemp("ltf")
    make_data(root / "data")
    fit(root / "data", 4, ckpt_dir=root / "ck", ckpt_every=4)
    return root / "data", root / "ck" / "step=4.ckpt"


def _edited(ckpt: Path, tmp: Path, edit: Edit) -> str:
    c = torch.load(ckpt, weights_only=False)  # our own test checkpoint
    edit(c)
    out = tmp / "edited.ckpt"
    torch.save(c, out)
    return str(out)


def _combined(c: dict[str, Any]) -> list[dict[str, Any]]:
    states: list[dict[str, Any]] = c["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    return states


def _drop_both(c: dict[str, Any]) -> None:
    del c["DDDataModule"]
    del c["loops"]["fit_loop"]["state_dict"]["combined_loader"]


def _other_step(c: dict[str, Any]) -> None:
    _combined(c)[0]["step"] = 3


def _nested(c: dict[str, Any]) -> None:
    c["DDDataModule"]["train"] = {"version": {"version": {"version": 1}}}


def _not_ours(c: dict[str, Any]) -> None:
    c["DDDataModule"] = {"format": "someone.else", "train": {}}


def _a_list(c: dict[str, Any]) -> None:
    c["DDDataModule"] = [1, 2, 3]


def _no_train(c: dict[str, Any]) -> None:
    del c["DDDataModule"]["train"]


def _future(c: dict[str, Any]) -> None:
    c["DDDataModule"]["version"] = 99


def _step_outside(c: dict[str, Any]) -> None:
    c["DDDataModule"]["train"]["step"] = 10**9
    _combined(c)[0]["step"] = 10**9


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (_drop_both, "holds no ddecomp loader state"),
        (_other_step, "two different loader states"),
        (_nested, "version"),
        (_not_ours, "not a ddecomp state"),
        (_a_list, "not a ddecomp state"),
        (_no_train, "no 'train' loader state"),
        (_future, "another ddecomp version"),
        (_step_outside, "outside epoch 0"),
    ],
)
def test_an_edited_checkpoint_is_refused_in_one_line(
    run: tuple[Path, Path], tmp_path: Path, edit: Edit, match: str
) -> None:
    data, ckpt = run
    with pytest.raises(UserError, match=match) as e:
        fit(data, 8, resume=_edited(ckpt, tmp_path, edit))
    assert "\n" not in str(e.value)


def test_without_the_datamodule_state_the_fit_loop_state_still_resumes_exactly(
    run: tuple[Path, Path], tmp_path: Path
) -> None:
    data, ckpt = run

    def drop(c: dict[str, Any]) -> None:
        del c["DDDataModule"]

    records, _, _ = fit(data, 6, resume=_edited(ckpt, tmp_path, drop))
    assert [r["step"] for r in records] == [4, 5]


def test_lightning_20550_is_refused_not_a_silent_restart(
    run: tuple[Path, Path], tmp_path: Path
) -> None:
    """Only the fit loop's loader state and a module reading estimated_stepping_batches: Lightning
    2.6.6 never loads that state (#20550) and would restart the epoch; we refuse instead."""
    data, ckpt = run

    class Scheduled(module_class()):  # type: ignore[misc]
        def configure_optimizers(self) -> Any:
            assert self.trainer.estimated_stepping_batches > 0
            return super().configure_optimizers()

    def drop(c: dict[str, Any]) -> None:
        del c["DDDataModule"]

    dm = datamodule_class()(make_loader(data))
    # max_epochs set: estimated_stepping_batches loads the data (with only max_steps it does not)
    t, edited = trainer(max_steps=8, max_epochs=1), _edited(ckpt, tmp_path, drop)
    with pytest.raises(UserError, match=r"resumes after 4 batches .* loader is at step 0"):
        t.fit(Scheduled(), datamodule=dm, ckpt_path=edited)


def test_a_checkpoint_of_another_dataset_is_refused(run: tuple[Path, Path], tmp_path: Path) -> None:
    _, ckpt = run
    make_data(tmp_path / "other", n_tokens=50_000)
    with pytest.raises(UserError, match="cannot resume: dataset is"):
        fit(tmp_path / "other", 8, resume=str(ckpt))


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"accumulate_grad_batches": 2}, "accumulate_grad_batches=2"),
        ({"limit_train_batches": 5}, "limit_train_batches=5"),
        ({"limit_train_batches": 0.5}, "limit_train_batches=0.5"),
        ({"overfit_batches": 2}, "overfit_batches=2"),
    ],
)
def test_trainer_settings_that_break_one_batch_per_step_are_refused(
    run: tuple[Path, Path], kw: dict[str, Any], match: str
) -> None:
    with pytest.raises(UserError, match=match):
        fit(run[0], 2, **kw)


def test_bad_loaders_are_refused(run: tuple[Path, Path]) -> None:
    DD = datamodule_class()
    loader = make_loader(run[0])
    with pytest.raises(UserError, match="torch DataLoader"):
        DD(torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.arange(4))))
    with pytest.raises(UserError, match="is a list"):
        DD([loader])
    with pytest.raises(UserError, match="val_loader is a str"):
        DD(loader, "val")
    with pytest.raises(UserError, match="val_loader is the train loader"):
        DD(loader, loader)


def test_a_world_size_that_does_not_divide_a_step_is_refused(run: tuple[Path, Path]) -> None:
    loader = make_loader(run[0])
    with pytest.raises(UserError, match="runs 16 processes but a step of length 128 has 8 rows"):
        place(loader, 3, 16)
    assert (loader.world.rank, loader.world.world_size) == (0, 1)  # unchanged
    place(loader, 1, 2)
    assert (loader.world.rank, loader.world.world_size) == (1, 2)
