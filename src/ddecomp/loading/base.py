"""What every ddecomp loader shares: the epoch cursor, exact step order, and resumable state.

A loader here is a pure function ``make_step(epoch, step) -> batch`` plus this machinery:

- an epoch cursor: ``set_epoch(e)`` serves epoch ``e`` from step 0 (unless ``e`` is already the
  current epoch, so a resumed loop may call it again); an iteration that starts at the end of an
  epoch moves on to the next one;
- workers: with ``num_workers = n > 0`` a ``torch.utils.data.DataLoader`` runs n processes over
  :class:`_WorkerSteps`, where worker ``w`` builds steps ``start + w, start + w + n, ...`` in order;
  the DataLoader's in-order round-robin hands them back as ``start, start + 1, ...`` and the main
  process checks every step number, so the served order never depends on workers' timing;
- state: ``{version, <identity>, epoch, step, world_size}``, small and JSON-serialisable, counting
  *global* steps; ``load_state_dict`` continues at exactly the next batch on any world size whose
  batch divides, and refuses a state whose identity (dataset, seed, ...) differs, with one line
  naming the field and both values.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from typing import Any

from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ddecomp.errors import UserError
from ddecomp.loading.world import World

STATE_VERSION = 1
Batch = dict[str, Any]


class _WorkerSteps(IterableDataset[Batch]):
    """Steps ``[start, stop)`` of one epoch; worker ``w`` of ``n`` serves ``start + w + k * n``."""

    def __init__(self, loader: StepLoader, epoch: int, start: int, stop: int) -> None:
        self.loader, self.epoch, self.start, self.stop = loader, epoch, start, stop

    def __iter__(self) -> Iterator[Batch]:
        info = get_worker_info()
        w, n = (info.id, info.num_workers) if info is not None else (0, 1)
        for s in range(self.start + w, self.stop, n):
            # in a worker, allocate in shared memory: the hand-over to the main is then no copy
            yield self.loader.make_step(self.epoch, s, shared=info is not None)


class StepLoader(ABC):
    """Base of :class:`~ddecomp.loading.vsl.VSLLoader` and the fixed-length baselines."""

    def __init__(self, world: World) -> None:
        self.world = world
        self._epoch, self._step = 0, 0

    @abstractmethod
    def steps_in_epoch(self, epoch: int) -> int:
        """Global steps of epoch ``epoch``."""

    @abstractmethod
    def make_step(self, epoch: int, step: int, shared: bool = False) -> Batch:
        """This rank's batch of global step ``step`` of epoch ``epoch`` (pure in its inputs)."""

    @property
    @abstractmethod
    def step_lengths(self) -> tuple[int, ...]:
        """The sequence lengths this epoch's batches have, shortest first: the shapes a compiled
        model must be warmed up for (rows per rank are ``tokens_per_step / world / L``)."""

    @abstractmethod
    def _identity(self) -> dict[str, Any]:
        """What the data order depends on; a resumed state must match it exactly."""

    def _canonical(self, key: str, value: Any) -> Any:
        """A state's ``value`` for ``key`` in the form :meth:`_identity` uses."""
        return value

    @property
    def epoch(self) -> int:
        return self._epoch

    @property
    def step(self) -> int:
        """The next global step this loader serves in the current epoch."""
        return self._step

    def set_epoch(self, epoch: int) -> None:
        """Serve epoch ``epoch``: from step 0, unless it is already the current epoch."""
        if epoch < 0:
            raise UserError(f"epoch {epoch} must be >= 0")
        if epoch != self._epoch:
            self._epoch, self._step = int(epoch), 0

    def __len__(self) -> int:
        """Global steps in the current epoch (every rank gets one batch per step)."""
        return self.steps_in_epoch(self._epoch)

    def __iter__(self) -> Iterator[Batch]:
        if self._step >= len(self):  # the epoch is done: go on to the next one
            self._epoch, self._step = self._epoch + 1, 0
        epoch, start, stop = self._epoch, self._step, len(self)
        source: Any
        if self.world.num_workers == 0:
            source = (self.make_step(epoch, s) for s in range(start, stop))
        else:
            source = DataLoader(
                _WorkerSteps(self, epoch, start, stop),
                batch_size=None,
                num_workers=self.world.num_workers,
            )
        expect = start
        for batch in source:
            assert batch["step"] == expect, f"step {batch['step']} arrived, {expect} expected"
            expect += 1
            self._step = expect
            yield batch

    def state_dict(self) -> dict[str, Any]:
        """Small JSON-serialisable state: the next global step and what the order depends on."""
        return {
            "version": STATE_VERSION,
            **self._identity(),
            "epoch": self._epoch,
            "step": self._step,
            "world_size": self.world.world_size,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue at exactly the next batch; refuse a state from another data order."""
        if state.get("version") != STATE_VERSION:
            raise UserError(
                f"loader state version {state.get('version')!r} is not {STATE_VERSION}; "
                "it was written by another ddecomp version"
            )
        for key, ours in self._identity().items():
            theirs = state.get(key)
            if theirs is not None:
                theirs = self._canonical(key, theirs)
            if theirs != ours:
                raise UserError(
                    f"cannot resume: {key} is {theirs!r} in the checkpoint but {ours!r} in this "
                    f"loader; construct the loader with the checkpoint's {key}"
                )
        epoch, step = int(state["epoch"]), int(state["step"])
        n = self.steps_in_epoch(epoch)
        if not 0 <= step <= n:
            raise UserError(f"loader state step {step} is outside epoch {epoch} (0..{n})")
        self._epoch, self._step = epoch, step
