"""Lightning: a ``LightningDataModule`` over ddecomp loaders, and the step's exact loss.

::

    dm = DDDataModule(VSLLoader(ds, tokens_per_step=..., total_tokens=...), val_loader=None)
    trainer = lightning.Trainer(strategy="ddp", max_steps=len(dm.train_loader), ...)
    trainer.fit(module, datamodule=dm)                   # later: fit(..., ckpt_path=...)

    def training_step(self, batch, i):                   # in the user's LightningModule
        out = dd_loss(self.model(batch["input_ids"]), batch)
        self.log("loss", out.mean)
        return out.loss

What :class:`DDDataModule` guarantees, and how:

- **No second sharding.** Lightning adds a ``DistributedSampler`` only to a
  ``torch.utils.data.DataLoader``; ``train_dataloader()`` returns a thin iterable over the ddecomp
  loader itself, never a DataLoader, so ``use_distributed_sampler`` has nothing to act on. A
  DataLoader passed in is refused. ``setup`` places every loader at the trainer's data-parallel
  rank (``trainer.global_rank`` of ``trainer.world_size``): a loader built before Lightning
  started its processes (``World.detect()`` saw one process) serves its own rank's slice.
- **One ddecomp global step = one optimizer step.** ``len(loader)`` is the plan's steps (with
  ``total_tokens``, the run), so ``max_steps=len(loader)`` or ``max_epochs=1`` trains the plan.
  ``accumulate_grad_batches`` (it would merge steps of different lengths into one update),
  ``limit_train_batches`` and ``overfit_batches`` are refused with one line.
- **Exact resume.** The loader's state (global steps: any world size whose batch divides) is
  saved twice by Lightning, as this DataModule's state and as the fit loop's stateful-loader
  state, and both are applied on ``fit(ckpt_path=...)``: the DataModule's early (before
  ``configure_optimizers``, so a module that reads ``trainer.estimated_stepping_batches`` does not
  lose it, Lightning #20550), the fit loop's later; two different states are refused. The
  iterable is lazy (the position is read at the first batch, after every restore) and sized, so
  Lightning never prefetches: the state saved after step k names step k as the next one, never
  the batch fetched but not trained. At the first batch of every epoch the loader's step must
  equal Lightning's batches done in the epoch; a checkpoint without a loader state (it would
  restart the epoch) is refused there.
- **Held-out batches** (``val_loader``): epoch 0 of that loader, from step 0, at every validation;
  its position is never saved.

:func:`dd_loss` sums cross entropy over the rank's targets and scales it by
``world_size / global_targets`` (targets all-reduced), so DDP's gradient mean is the
single-process gradient of the whole step; its ``mean`` is the step's loss, equal on all ranks.

Lightning is imported on first use (``lightning.pytorch``, else ``pytorch_lightning``):
:func:`datamodule_class` builds the class for either.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from importlib import import_module
from typing import Any, NamedTuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from ddecomp.errors import UserError
from ddecomp.loading.base import StepLoader
from ddecomp.loading.protocols import IGNORE_INDEX, Batch
from ddecomp.loading.world import World

STATE_FORMAT = "ddecomp.lightning.datamodule"
STATE_VERSION = 1
FLAVOURS = ("lightning.pytorch", "pytorch_lightning")
_CLASSES: dict[str, type[Any]] = {}


def _lightning(flavour: str | None = None) -> Any:
    """The Lightning package: ``flavour`` (one of :data:`FLAVOURS`), or the first installed."""
    if flavour is not None and flavour not in FLAVOURS:
        raise UserError(f"Lightning flavour {flavour!r}: use one of {', '.join(FLAVOURS)}")
    for name in [flavour] if flavour else FLAVOURS:
        try:
            return import_module(name)
        except ImportError:
            continue
    raise UserError(
        "DDDataModule needs Lightning: pip install 'ddecomp[lightning]' (or pytorch-lightning)"
    )


def _check_loader(loader: object, name: str) -> StepLoader:
    if isinstance(loader, StepLoader):
        return loader
    if isinstance(loader, torch.utils.data.DataLoader):
        raise UserError(
            f"{name} is a torch DataLoader; DDDataModule takes the ddecomp loader itself "
            "(VSLLoader, ConcatChunkLoader, PackedLoader): Lightning would give a DataLoader a "
            "DistributedSampler and shard the rank-aware batches again"
        )
    raise UserError(
        f"{name} is a {type(loader).__name__}; DDDataModule takes a ddecomp loader "
        "(VSLLoader, ConcatChunkLoader, PackedLoader)"
    )


def place(loader: StepLoader, rank: int, world_size: int, local_rank: int = 0) -> None:
    """Serve ``loader`` as data-parallel ``rank`` of ``world_size`` (its workers kept); refuse a
    world size that does not divide a step's rows, naming the step length."""
    w = loader.world
    if (w.rank, w.world_size) == (rank, world_size):
        return
    for L in loader.step_lengths:
        rows = loader.tokens_per_step // L
        if rows % world_size:
            raise UserError(
                f"the Trainer runs {world_size} processes but a step of length {L} has {rows} "
                f"rows (tokens_per_step {loader.tokens_per_step}); use a tokens_per_step that "
                f"is a multiple of {max(loader.step_lengths) * world_size}"
            )
    loader.world = World(rank, world_size, local_rank, w.num_workers)


class _TrainSteps:
    """The train loader as Lightning sees it: sized, stateful, lazily positioned."""

    def __init__(self, dm: _DDDataModuleMixin, loader: StepLoader) -> None:
        self.dm, self.loader = dm, loader

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Batch]:
        # Lightning reads len() right after iter(): a finished epoch moves on now, so the length
        # is the next epoch's (a restored position is read lazily, at the first batch)
        if self.loader.step >= len(self.loader):
            self.loader.set_epoch(self.loader.epoch + 1)
        return self._serve()

    def _serve(self) -> Iterator[Batch]:
        if self.loader.step >= len(self.loader):
            self.loader.set_epoch(self.loader.epoch + 1)
        self.dm._check_position(self.loader.step)
        yield from self.loader

    def state_dict(self) -> dict[str, Any]:
        return self.loader.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.dm._load_train(state, "the fit loop's loader state")


class _EvalSteps:
    """A held-out loader: epoch 0 from step 0 at every pass, its position untouched."""

    def __init__(self, loader: StepLoader) -> None:
        self.loader = loader

    def __len__(self) -> int:
        return self.loader.steps_in_epoch(0)

    def __iter__(self) -> Iterator[Batch]:
        for s in range(len(self)):
            yield self.loader.make_step(0, s)


class _DDDataModuleMixin:
    """The methods of :class:`DDDataModule` (combined with a LightningDataModule base by
    :func:`datamodule_class`)."""

    trainer: Any  # set by Lightning

    def __init__(self, train_loader: StepLoader, val_loader: StepLoader | None = None) -> None:
        super().__init__()
        self.train_loader = _check_loader(train_loader, "train_loader")
        self.val_loader = None if val_loader is None else _check_loader(val_loader, "val_loader")
        if self.val_loader is self.train_loader:
            raise UserError("val_loader is the train loader; give held-out data its own loader")
        self._train = _TrainSteps(self, self.train_loader)
        self._restored: dict[str, Any] | None = None

    # ---- Lightning hooks -----------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        t = self.trainer
        if stage == "fit":
            _refuse_fit_settings(t)
        for loader in (self.train_loader, self.val_loader):
            if loader is not None:
                place(loader, int(t.global_rank), int(t.world_size), int(t.local_rank))
        self._restored = None

    def train_dataloader(self) -> _TrainSteps:
        return self._train

    def val_dataloader(self) -> _EvalSteps | list[Any]:
        return [] if self.val_loader is None else _EvalSteps(self.val_loader)

    def state_dict(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "train": self.train_loader.state_dict(),
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        s = state_dict
        if not isinstance(s, Mapping) or s.get("format") != STATE_FORMAT:
            got = s.get("format") if isinstance(s, Mapping) else type(s).__name__
            raise UserError(
                f"the checkpoint's DDDataModule state is not a ddecomp state (format {got!r}); "
                "resume from a checkpoint this DataModule wrote"
            )
        if s.get("version") != STATE_VERSION:
            raise UserError(
                f"the checkpoint's DDDataModule state has version {s.get('version')!r}, not "
                f"{STATE_VERSION}; it was written by another ddecomp version"
            )
        if "train" not in s:
            raise UserError("the checkpoint's DDDataModule state has no 'train' loader state")
        self._load_train(s["train"], "the DataModule state")

    # ---- internals -----------------------------------------------------------------------------
    def _load_train(self, state: Any, where: str) -> None:
        if self._restored is not None:
            if state != self._restored:
                raise UserError(
                    f"the checkpoint holds two different loader states ({where} differs from "
                    "the one restored before); it was edited: resume from an unedited checkpoint"
                )
            return
        self.train_loader.load_state_dict(state)
        self._restored = dict(state)

    def _check_position(self, step: int) -> None:
        t = self.trainer
        if t is None or getattr(t, "fit_loop", None) is None:
            return
        done = int(t.fit_loop.epoch_loop.batch_progress.current.ready)
        if step != done:
            raise UserError(
                f"Lightning resumes after {done} batches of epoch {t.current_epoch} but the "
                f"loader is at step {step}: the checkpoint {t.ckpt_path} holds no ddecomp "
                "loader state for this position; resume from a checkpoint DDDataModule wrote"
            )


def _refuse_fit_settings(t: Any) -> None:
    """One line for each Trainer setting that breaks one-loader-batch-per-optimizer-step."""
    if int(t.accumulate_grad_batches) != 1:
        raise UserError(
            f"accumulate_grad_batches={t.accumulate_grad_batches}: a ddecomp batch is one whole "
            "global step; cut it into micro-batches inside training_step (manual optimization, "
            "ddecomp.training.microbatch.split_batch + dd_loss(..., targets=global_targets(batch)))"
        )
    if t.overfit_batches:
        raise UserError(f"overfit_batches={t.overfit_batches} replays a few batches: use max_steps")
    limit = t.limit_train_batches
    if limit is not None and not (isinstance(limit, float) and limit == 1.0):
        raise UserError(
            f"limit_train_batches={limit}: the plan fixes the steps of an epoch; stop early with "
            "max_steps instead"
        )


def datamodule_class(flavour: str | None = None) -> type[Any]:
    """``DDDataModule`` on the LightningDataModule of ``flavour`` (``"lightning.pytorch"`` or
    ``"pytorch_lightning"``; default: the first installed). Use the flavour of your Trainer."""
    pl = _lightning(flavour)
    key = pl.__name__
    if key not in _CLASSES:
        cls = type("DDDataModule", (_DDDataModuleMixin, pl.LightningDataModule), {})
        cls.__doc__ = __doc__
        cls.__module__ = __name__
        _CLASSES[key] = cls
    return _CLASSES[key]


def __getattr__(name: str) -> Any:
    if name == "DDDataModule":
        return datamodule_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ---- the loss ----------------------------------------------------------------------------------
class DDLoss(NamedTuple):
    """``loss``: return it from ``training_step`` (this rank's summed cross entropy times
    ``world_size / global_targets``); ``mean``: the step's mean cross entropy over every rank's
    targets (detached, the same on every rank: what one process would report)."""

    loss: Tensor
    mean: Tensor


def _world_size(group: Any) -> int:
    return dist.get_world_size(group) if dist.is_available() and dist.is_initialized() else 1


def global_targets(batch: Batch | Mapping[str, Any], group: Any = None) -> Tensor:
    """The step's targets over every rank (labels other than ``IGNORE_INDEX``), all-reduced."""
    n = (_labels(batch) != IGNORE_INDEX).sum().to(torch.float64)
    if _world_size(group) > 1:
        dist.all_reduce(n, group=group)
    return n


def _labels(batch: Batch | Mapping[str, Any]) -> Tensor:
    if not isinstance(batch, Mapping) or "labels" not in batch or "seq_len" not in batch:
        raise UserError(
            f"dd_loss takes a ddecomp batch (a dict with labels and seq_len), not "
            f"{type(batch).__name__}: was the loader replaced or re-wrapped?"
        )
    labels: Tensor = batch["labels"]
    return labels


def dd_loss(
    logits: Tensor,
    batch: Batch | Mapping[str, Any],
    *,
    targets: Tensor | None = None,
    group: Any = None,
) -> DDLoss:
    """The exact loss of a ddecomp step for ``logits [rows, L, vocab]`` of ``batch``.

    One all-reduce of ``(targets, loss sum)`` over ``group`` (default: the whole world; no
    collective in one process). ``targets``: the whole step's :func:`global_targets`, when
    ``batch`` is one micro-batch of it (then ``mean`` is that micro-batch's part of the step's
    mean, and the parts add up).
    """
    labels = _labels(batch).to(logits.device)
    if logits.shape[:2] != labels.shape:
        raise UserError(
            f"logits {tuple(logits.shape)} do not match labels {tuple(labels.shape)}: the model "
            "must return [rows, seq_len, vocab] for the batch's input_ids"
        )
    part = F.cross_entropy(
        logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
    )
    W = _world_size(group)
    local = (labels != IGNORE_INDEX).sum().to(torch.float64)
    stats = torch.stack([local, part.detach().to(torch.float64)])
    if W > 1:
        dist.all_reduce(stats, group=group)
    n = stats[0] if targets is None else targets.to(stats.device, torch.float64)
    n = n.clamp(min=1)  # a step without targets trains nothing (its sum is 0); no host sync here
    return DDLoss(part * (W / n).to(part.dtype), (stats[1] / n).to(torch.float32))
