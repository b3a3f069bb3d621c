"""What every ddecomp loader shares: the epoch cursor, exact step order, and resumable state.

A loader here is a pure function ``make_step(epoch, step) -> batch`` plus this machinery:

- one order: every loader, DD's and the baselines', executes a :class:`~ddecomp.loading.plan.Plan`
  (the baselines' plan has one bucket, their row length): global step ``s`` takes the plan's
  batch of step ``s`` and rank ``r`` its contiguous slice ``plan.rank_rows(s, r, W)``, so the
  plan's proof that every served row is served exactly once, on any world size, covers them all;

- an epoch cursor: ``set_epoch(e)`` serves epoch ``e`` from step 0 (unless ``e`` is already the
  current epoch, so a resumed loop may call it again); an iteration that starts at the end of an
  epoch moves on to the next one;
- workers: with ``num_workers = n > 0`` a ``torch.utils.data.DataLoader`` runs n processes over
  :class:`_WorkerSteps`, where worker ``w`` builds steps ``start + w, start + w + n, ...`` in order;
  the DataLoader's in-order round-robin hands them back as ``start, start + 1, ...`` and the main
  process checks every step number, so the served order never depends on workers' timing;
- layout: ``layout="flat"`` serves every batch as one ``[1, T]`` stream with ``cu_seqlens``
  (:mod:`ddecomp.loading.flat`); the layout is not part of the state (it changes no order);
- state: ``{version, <identity>, order, epoch, step, world_size}``, small and
  JSON-serialisable, counting *global* steps (``order``: the row order's version,
  :data:`ddecomp.permutation.ORDER_VERSION`; another is refused); ``load_state_dict``
  continues at exactly the next batch on any world size whose batch divides, and refuses a
  state whose identity (dataset, seed, ...) differs, with one line naming the field and both
  values. A malformed state (not a mapping, a field missing, of the wrong type or out of
  range) is refused the same way, naming the field: never a KeyError.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ddecomp.errors import UserError
from ddecomp.loading.flat import check_layout, to_flat
from ddecomp.loading.plan import Plan
from ddecomp.loading.protocols import Batch
from ddecomp.loading.world import World, WorldSpec, as_world
from ddecomp.permutation import ORDER_VERSION, check_order

STATE_VERSION = 1
_POSITION = ("epoch", "step", "world_size")  # state fields after the identity


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


def _state_int(state: Mapping[str, Any], key: str, lo: int) -> int:
    """``state[key]`` as an int ``>= lo``, else a UserError naming the field."""
    if key not in state:
        raise UserError(f"loader state has no field {key!r}; it is not a ddecomp loader state")
    v = state[key]
    if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < lo:
        raise UserError(f"loader state field {key!r} is {v!r}; it must be an integer >= {lo}")
    return int(v)


class StepLoader(ABC):
    """Base of :class:`~ddecomp.loading.vsl.VSLLoader` and the fixed-length baselines.

    A subclass says how to build an epoch's plan (:meth:`_build_plan`) and how to turn a rank's
    row indices into a batch (:meth:`make_step`); the rank's rows always come from
    :meth:`rank_rows`, the one place a step is cut into rank slices.
    """

    tokens_per_step: int  # global tokens per step (every rank: ``tokens_per_step / world_size``)

    def __init__(self, world: WorldSpec, layout: str = "rows") -> None:
        # a process group or DeviceMesh is the data-parallel group: one replica, one slice
        self.world: World = as_world(world)
        self.layout = check_layout(layout)  # not in the state: it changes no order
        self._epoch, self._step = 0, 0
        self._plan: Plan | None = None

    @abstractmethod
    def _build_plan(self, epoch: int) -> Plan:
        """Epoch ``epoch``'s plan (pure in the loader's identity and ``epoch``)."""

    @abstractmethod
    def make_step(self, epoch: int, step: int, shared: bool = False) -> Batch:
        """This rank's batch of global step ``step`` of epoch ``epoch`` (pure in its inputs)."""

    @property
    @abstractmethod
    def step_lengths(self) -> tuple[int, ...]:
        """The sequence lengths this epoch's batches have, shortest first: the shapes a compiled
        model must be warmed up for (rows per rank are ``tokens_per_step / world / L``)."""

    @property
    def masked_lengths(self) -> tuple[int, ...]:
        """Step lengths whose batches may carry a document mask besides the method's own (DD's
        packed tail rows); a compiled model is warmed up for them both ways. None by default."""
        return ()

    @abstractmethod
    def _identity(self) -> dict[str, Any]:
        """What the data order depends on; a resumed state must match it exactly."""

    @abstractmethod
    def summary(self) -> dict[str, Any]:
        """What this loader serves per epoch and this rank's share (JSON-serialisable)."""

    def _canonical(self, key: str, value: Any) -> Any:
        """A state's ``value`` for ``key`` in the form :meth:`_identity` uses."""
        return value

    def _laid_out(self, batch: Batch) -> Batch:
        """``batch`` (rows) in this loader's layout (:mod:`ddecomp.loading.flat`)."""
        return to_flat(batch) if self.layout == "flat" else batch

    # ---- plan ----------------------------------------------------------------------------------
    def plan_for(self, epoch: int) -> Plan:
        """Epoch ``epoch``'s plan (the current epoch's is built once and kept)."""
        if self._plan is None or self._plan.epoch != epoch:
            plan = self._build_plan(epoch)
            if epoch != self._epoch:
                return plan
            self._plan = plan
        return self._plan

    @property
    def plan(self) -> Plan:
        """This epoch's plan."""
        return self.plan_for(self._epoch)

    def steps_in_epoch(self, epoch: int) -> int:
        """Global steps of epoch ``epoch``."""
        return len(self.plan_for(epoch))

    def rank_rows(self, plan: Plan, step: int) -> np.ndarray:
        """This rank's row indices of global step ``step`` (its contiguous slice of the batch)."""
        return plan.rank_rows(step, self.world.rank, self.world.world_size)

    # ---- epochs and iteration ------------------------------------------------------------------
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
        source: Iterable[Batch]
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

    # ---- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Small JSON-serialisable state: the next global step and what the order depends on."""
        return {
            "version": STATE_VERSION,
            **self._identity(),
            "order": ORDER_VERSION,
            "epoch": self._epoch,
            "step": self._step,
            "world_size": self.world.world_size,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue at exactly the next batch; refuse a state from another data order, or a
        malformed one, with a UserError naming the field."""
        if not isinstance(state, Mapping):
            raise UserError(f"loader state is a {type(state).__name__}, not a mapping")
        if state.get("version") != STATE_VERSION:
            raise UserError(
                f"loader state version {state.get('version')!r} is not {STATE_VERSION}; "
                "it was written by another ddecomp version"
            )
        check_order(state.get("order", 1))
        for key, ours in self._identity().items():
            if key not in state:
                raise UserError(f"cannot resume: the loader state has no field {key!r}")
            try:
                theirs = self._canonical(key, state[key])
            except (TypeError, ValueError):
                theirs = state[key]
            if type(theirs) is not type(ours) or theirs != ours:
                raise UserError(
                    f"cannot resume: {key} is {state[key]!r} in the checkpoint but {ours!r} in "
                    f"this loader; construct the loader with the checkpoint's {key}"
                )
        epoch, step = _state_int(state, "epoch", 0), _state_int(state, "step", 0)
        _state_int(state, "world_size", 1)
        n = self.steps_in_epoch(epoch)
        if step > n:
            raise UserError(f"loader state step {step} is outside epoch {epoch} (0..{n})")
        self._epoch, self._step = epoch, step
