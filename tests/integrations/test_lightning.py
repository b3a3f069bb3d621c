"""DDDataModule with the real Lightning Trainer on CPU: the plan trained, exact resume, DDP.

One uninterrupted 30-step run (a 24-step run plan, so steps 24..29 are epoch 1) with a Lightning
checkpoint every 4 steps is the reference; resumed runs in new Trainers must train exactly its
batches and losses after the checkpoint's step. See :mod:`tests.integrations._lightning_run`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip("lightning")

from ddecomp.errors import UserError
from ddecomp.integrations.lightning import datamodule_class, dd_loss
from tests._fixtures import run_torchrun
from tests.integrations._lightning_run import (
    fit,
    make_data,
    make_loader,
    module_class,
    trainer,
)

RUN = Path(__file__).with_name("_lightning_run.py")
STEPS, PLAN, EVERY = 30, 24, 4


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # two shared cores: more threads make every step 5x slower here
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    root = tmp_path_factory.mktemp("lt") / "data"
    return root, make_data(root)


@pytest.fixture(scope="module")
def ref(data: tuple[Path, np.ndarray], tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The uninterrupted run: records, checkpoint directory, DataModule."""
    ck = tmp_path_factory.mktemp("ck")
    records, t, dm = fit(data[0], STEPS, ckpt_dir=ck, ckpt_every=EVERY, total_steps=PLAN)
    assert t.global_step == STEPS
    return records, ck, dm


def key(r: dict[str, Any]) -> tuple[Any, ...]:
    return r["epoch"], r["step"], r["seq_len"], tuple(r["starts"])


def test_trains_the_plan_every_row_once_and_the_loss_falls(data: Any, ref: Any) -> None:
    root, toks = data
    records, _, dm = ref
    plan = make_loader(root, PLAN).plan
    assert len(plan) == PLAN
    assert dm.train_loader.epoch == 1
    # the lengths trained are the plan's, epoch 0 then epoch 1 (a new order of the same run)
    ep1 = make_loader(root, PLAN).plan_for(1).step_length.tolist()
    assert [r["seq_len"] for r in records] == plan.step_length.tolist() + ep1[: STEPS - PLAN]
    assert [(r["epoch"], r["step"]) for r in records] == [(s // PLAN, s % PLAN) for s in range(30)]
    assert [r["global_step"] for r in records] == list(range(STEPS))  # one batch, one step
    # token identity: every row is the token file's slice at its start; no row twice in a run
    rows = 0
    for r in records:
        for start, row in zip(r["starts"], r["rows"], strict=True):
            want = toks[start : start + r["seq_len"] + 1]
            assert np.array_equal(np.asarray(row, dtype=np.uint32), want)
            rows += 1
    ep0 = [(r["seq_len"], s) for r in records[:PLAN] for s in r["starts"]]
    assert len(ep0) == len(set(ep0)) == sum(1024 // L for L in plan.step_length.tolist())
    assert rows > 300  # vacuity guard
    losses = [r["loss"] for r in records]
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.5, losses


@pytest.mark.parametrize("at", [8, 24, 28])  # mid-epoch 0, exactly its end, mid-epoch 1
def test_resume_from_a_lightning_checkpoint_trains_the_same_steps(
    data: Any, ref: Any, at: int
) -> None:
    records, ck, _ = ref
    again, t, _dm = fit(data[0], STEPS, resume=str(ck / f"step={at}.ckpt"), total_steps=PLAN)
    assert t.global_step == STEPS
    assert len(again) == STEPS - at > 0
    assert [key(r) for r in again] == [key(r) for r in records[at:]]
    assert [r["loss"] for r in again] == [r["loss"] for r in records[at:]]  # bitwise on CPU


def test_resume_survives_a_module_that_reads_estimated_stepping_batches(
    data: Any, ref: Any
) -> None:
    """Lightning #20550: reading ``trainer.estimated_stepping_batches`` in configure_optimizers
    sets the data up before the checkpoint is restored, and the fit loop's loader state is then
    never loaded; the DataModule's own state still is."""
    records, ck, _ = ref
    LM = module_class()

    class Scheduled(LM):  # type: ignore[misc,valid-type]
        def configure_optimizers(self) -> Any:
            opt = super().configure_optimizers()
            n = self.trainer.estimated_stepping_batches
            assert n == STEPS
            return [opt], [torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 - s / (2 * n))]

    def run(resume: str | None, max_steps: int) -> list[dict[str, Any]]:
        lm, dm = Scheduled(), datamodule_class()(make_loader(data[0], PLAN))
        cb = [__import__("lightning").pytorch.callbacks.ModelCheckpoint(
            dirpath=str(ck / "sched"), every_n_train_steps=EVERY, save_top_k=-1, filename="{step}"
        )]  # fmt: skip
        # max_epochs set: estimated_stepping_batches then sets the data up (#20550's path)
        t = trainer(max_steps=max_steps, max_epochs=2, callbacks=cb, enable_checkpointing=True)
        t.fit(lm, datamodule=dm, ckpt_path=resume)
        return list(lm.records)

    full = run(None, STEPS)
    assert [key(r) for r in full] == [key(r) for r in records]
    again = run(str(ck / "sched" / "step=12.ckpt"), STEPS)
    assert [key(r) for r in again] == [key(r) for r in full[12:]]
    assert [r["loss"] for r in again] == [r["loss"] for r in full[12:]]


def test_pytorch_lightning_imports_build_the_same_datamodule(data: Any, ref: Any) -> None:
    pl = pytest.importorskip("pytorch_lightning")
    cls = datamodule_class("pytorch_lightning")
    assert issubclass(cls, pl.LightningDataModule)
    assert cls is not datamodule_class()
    assert cls.__qualname__ == datamodule_class().__qualname__ == "DDDataModule"
    records, ck, _ = ref
    # a checkpoint written through lightning.pytorch resumes under pytorch_lightning
    again, _t, _ = fit(
        data[0], 12, resume=str(ck / "step=8.ckpt"), flavour="pytorch_lightning", total_steps=PLAN
    )
    assert [key(r) for r in again] == [key(r) for r in records[8:12]]
    assert [r["loss"] for r in again] == [r["loss"] for r in records[8:12]]


def test_the_iterable_lightning_serves_is_the_datamodules_own(data: Any) -> None:
    """With use_distributed_sampler=True (the default) Lightning keeps the ddecomp iterable:
    nothing wraps it (a DistributedSampler needs a torch DataLoader)."""
    records, t, dm = fit(data[0], 2, total_steps=PLAN, use_distributed_sampler=True)
    served = t.fit_loop._combined_loader.flattened
    assert len(served) == 1
    assert served[0] is dm.train_dataloader()
    assert not isinstance(served[0], torch.utils.data.DataLoader)
    assert [r["step"] for r in records] == [0, 1]


def test_dd_loss_is_the_mean_over_targets_and_masked_labels_do_not_count() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 8, 5, requires_grad=True)
    labels = torch.randint(0, 5, (2, 8))
    labels[0, :3] = -100
    out = dd_loss(logits, {"labels": labels, "seq_len": 8})
    want = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten())
    assert torch.allclose(out.loss, want)
    assert torch.allclose(out.mean, want)
    with pytest.raises(UserError, match="ddecomp batch"):
        dd_loss(logits, [logits])  # type: ignore[arg-type]
    with pytest.raises(UserError, match="do not match labels"):
        dd_loss(logits[:, :4], {"labels": labels, "seq_len": 8})


def _ddp(data: Path, out: Path, *args: str) -> list[dict[str, Any]]:
    r = run_torchrun(str(RUN), str(data), str(out), *args)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-4000:])
    return [json.loads((out / f"rank{k}.json").read_text()) for k in (0, 1)]


def _compare_ddp(ranks: list[dict[str, Any]], want: list[dict[str, Any]]) -> None:
    assert [(r["rank"], r["world_size"]) for r in ranks] == [(0, 2), (1, 2)]
    assert [r["loader_world"] for r in ranks] == [[0, 2], [1, 2]]  # placed at the Trainer's rank
    assert all(r["served_is_datamodule_iterable"] for r in ranks)  # never re-wrapped
    a, b = ranks[0]["records"], ranks[1]["records"]
    assert len(a) == len(b) == len(want) > 0
    for x, y, w in zip(a, b, want, strict=True):
        assert (x["step"], x["seq_len"]) == (y["step"], y["seq_len"]) == (w["step"], w["seq_len"])
        assert not set(x["starts"]) & set(y["starts"])  # disjoint
        assert x["starts"] + y["starts"] == w["starts"]  # rank slices of the one-process batch
        assert x["loss"] == pytest.approx(w["loss"], rel=1e-4)
        assert y["loss"] == pytest.approx(x["loss"], rel=1e-6)  # the step's mean, on both ranks


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="gloo on 127.0.0.1 under torchrun")
def test_two_process_ddp_serves_disjoint_slices_with_the_one_process_loss(
    data: Any, ref: Any, tmp_path: Path
) -> None:
    records, ck, _ = ref
    _compare_ddp(_ddp(data[0], tmp_path / "fresh", "--max-steps", "12"), records[:12])
    # a one-process checkpoint resumed by two processes continues the same global order
    at8 = str(ck / "step=8.ckpt")
    _compare_ddp(_ddp(data[0], tmp_path / "r", "--max-steps", "12", "--resume", at8), records[8:12])


EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "lightning_trainer.py"


@pytest.mark.slow  # three fresh processes importing Lightning
def test_the_example_trains_checkpoints_and_resumes(tmp_path: Path) -> None:
    from tests._fixtures import run_python
    from tests.training._corpus import make_dataset

    data = make_dataset(tmp_path / "data")  # vocab 64, max_len 128, a val split
    args = [str(EXAMPLE), str(data), "--steps", "10", "--tokens-per-step", "1024", "--every", "5"]
    env = {"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    r = run_python(*args, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "step 10 len " in r.stdout
    assert r.stdout.strip().splitlines()[-1] == "done: 10 steps; loader state 0:10"
    ck = data / "lightning" / "step=5.ckpt"
    assert ck.is_file()
    r = run_python(*args, "--resume", str(ck), env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip().splitlines()[-1] == "done: 10 steps; loader state 0:10"
    r = run_python(*args, "--resume", str(tmp_path / "nope.ckpt"), env=env)
    assert r.returncode == 2
    assert r.stderr.strip() == f"error: --resume {tmp_path / 'nope.ckpt'}: no such checkpoint file"


def test_dd_loss_on_micro_batches_gives_the_whole_steps_gradient() -> None:
    from ddecomp.integrations.lightning import global_targets
    from ddecomp.loading.protocols import Batch
    from ddecomp.training.microbatch import split_batch

    torch.manual_seed(0)
    w = torch.randn(6, 5, requires_grad=True)
    labels = torch.randint(0, 5, (5, 4))
    labels[1, :3] = -100  # micro-batches with different target counts
    x = torch.randint(0, 6, (5, 4))
    batch: Batch = {"input_ids": x, "labels": labels, "seq_len": 4, "step": 0, "epoch": 0}
    whole = dd_loss(w[x], batch)
    (g_whole,) = torch.autograd.grad(whole.loss, w)
    n = global_targets(batch)
    parts = [dd_loss(w[mb["input_ids"]], mb, targets=n) for mb in split_batch(batch, 8)]
    assert len(parts) == 3  # 2 + 2 + 1 rows
    (g_parts,) = torch.autograd.grad(torch.stack([p.loss for p in parts]).sum(), w)
    assert torch.allclose(g_parts, g_whole, atol=1e-6)
    assert torch.allclose(torch.stack([p.mean for p in parts]).sum(), whole.mean)


def test_validation_serves_the_same_held_out_steps_every_time(data: Any) -> None:
    LM = module_class()

    class Validated(LM):  # type: ignore[misc,valid-type]
        def validation_step(self, batch: Any, i: int) -> None:
            self.seen.append(
                (int(batch["epoch"]), int(batch["step"]), tuple(batch["input_ids"][:, 0].tolist()))
            )

    lm = Validated()
    lm.seen = []
    train, val = make_loader(data[0], PLAN), make_loader(data[0], None, seed=1)
    dm = datamodule_class()(train, val)
    t = trainer(max_steps=4, val_check_interval=2, limit_val_batches=3)
    t.fit(lm, datamodule=dm)
    assert len(lm.seen) == 6  # two validations of three steps
    assert lm.seen[:3] == lm.seen[3:]
    assert [s[:2] for s in lm.seen[:3]] == [(0, 0), (0, 1), (0, 2)]
    assert (val.epoch, val.step) == (0, 0)  # the held-out loader's position is never moved
    assert [r["step"] for r in lm.records] == [0, 1, 2, 3]


def test_importing_ddecomp_and_the_adapter_does_not_import_lightning() -> None:
    from tests._fixtures import run_python

    code = (
        "import sys, ddecomp, ddecomp.integrations, ddecomp.integrations.lightning as m\n"
        "assert not {'lightning', 'pytorch_lightning'} & set(sys.modules), 'imported'\n"
        "m.DDDataModule\n"
        "assert 'lightning' in sys.modules\n"
        "print('ok')\n"
    )
    r = run_python("-c", code)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "ok"
