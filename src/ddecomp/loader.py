"""``VSLLoader``: serves a variable-sequence-length epoch, exact across ranks, workers and resume.

The loader only *executes* a :class:`~ddecomp.plan.Plan` (pure, world-size independent): at
global step ``s`` every rank reads its contiguous slice of the step's global batch from bucket
``L = plan.step_length[s]`` with one ``ds.rows(L, idx, out=...)`` call into a preallocated int64
buffer ``[tokens_per_step // (L * world_size), L + 1]``; ``input_ids`` and ``labels`` are the
views ``buf[:, :-1]`` and ``buf[:, 1:]`` (no further copy; they are not contiguous, use
``.reshape`` / ``.to(device)`` rather than ``.view``). Tokens per rank and step are constant.

Workers: with ``num_workers = n > 0`` a ``torch.utils.data.DataLoader`` runs n processes over an
``IterableDataset``; worker ``w`` builds steps ``start + w, start + w + n, ...`` in order and the
DataLoader's in-order round-robin over workers hands them back as ``start, start + 1, ...``. The
main process checks every step number, so the served order is the plan's whatever the workers'
timing (one anchor serves duplicate rows when its reader threads start late; here a worker owns
whole steps and nothing is shared).

Resume: the state counts *global* steps (``{version, dataset, seed, epoch, step, curriculum,
cycles, tokens_per_step, ...}``, JSON-serialisable, ~300 bytes); ``load_state_dict`` continues at
exactly the next batch, on any world size whose batch divides (elastic resume). Epochs:
``set_epoch(e)`` selects epoch ``e`` (from step 0 unless ``e`` is the current epoch, so a resumed
loop may call it again); an iteration that starts at the end of an epoch moves on to the next.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from .curriculum import Curriculum, resolve_curriculum
from .errors import UserError
from .plan import MixtureSpec, Plan, build_plan, check_tokens_per_step
from .world import World

STATE_VERSION = 1
Batch = dict[str, Any]


def _mixture_json(m: MixtureSpec) -> str | dict[str, int] | None:
    if m is None or isinstance(m, str):
        return m
    return {str(int(L)): int(t) for L, t in sorted(m.items())}


def make_batch(ds: Any, plan: Plan, step: int, world: World, shared: bool = False) -> Batch:
    """Rank ``world.rank``'s batch of global step ``step``: one gather into an int64 buffer."""
    L = int(plan.step_length[step])
    idx = plan.rank_rows(step, world.rank, world.world_size)
    buf = torch.empty((idx.size, L + 1), dtype=torch.int64)
    if shared:  # in a worker: allocate in shared memory so the hand-over to the main is no copy
        buf.share_memory_()
    ds.rows(L, idx, out=buf.numpy())
    return {
        "input_ids": buf[:, :-1],
        "labels": buf[:, 1:],
        "seq_len": L,
        "step": step,
        "epoch": plan.epoch,
    }


class _StepStream(IterableDataset[dict[str, Any]]):
    """Steps ``[start, stop)`` of a plan, split over DataLoader workers by ``step % n``."""

    def __init__(self, ds: Any, plan: Plan, world: World, start: int) -> None:
        self.ds, self.plan, self.world, self.start = ds, plan, world, start

    def __getstate__(self) -> dict[str, Any]:
        # spawn/forkserver pickle the stream: reopen the dataset instead of pickling its memmaps
        state = dict(self.__dict__)
        ds = state.pop("ds")
        state["ds_ref"] = (str(ds.root), ds.split, ds.fingerprint)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        from .dataset import open_dataset

        root, split, fp = state.pop("ds_ref")
        self.__dict__.update(state)
        self.ds = open_dataset(root, split)
        assert self.ds.fingerprint == fp, "dataset changed under a running loader"

    def __iter__(self) -> Iterator[Batch]:
        info = get_worker_info()
        w, n = (info.id, info.num_workers) if info is not None else (0, 1)
        for s in range(self.start + w, len(self.plan), n):
            yield make_batch(self.ds, self.plan, s, self.world, shared=info is not None)


class VSLLoader:
    """Variable-sequence-length loader; see the module docstring.

    ``curriculum``: a name from :data:`ddecomp.curriculum.CURRICULA` or odds, one per bucket of
    the dataset's range ``min_len..max_len`` (empty buckets included), shortest first.
    ``rank`` / ``world_size``: default from ``torch.distributed`` when initialized, else 0 / 1.
    ``tokens_per_step`` must be a multiple of ``max_len * world_size``.
    """

    def __init__(
        self,
        ds: Any,
        tokens_per_step: int,
        curriculum: str | Sequence[float] | Curriculum = "grow-p2",
        cycles: int = 8,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        num_workers: int = 0,
        *,
        mode: str = "sample",
        oom_probe: bool = True,
        mixture: MixtureSpec = None,
    ) -> None:
        self.ds = ds
        self.world = World.detect(rank, world_size, num_workers)
        check_tokens_per_step(tokens_per_step, list(ds.bucket_rows), self.world.world_size)
        self.tokens_per_step = int(tokens_per_step)
        self.curriculum = resolve_curriculum(curriculum)
        self.cycles, self.seed, self.mode = cycles, int(seed), mode
        self.oom_probe, self.mixture = oom_probe, mixture
        self._epoch, self._step = 0, 0
        self._plan: Plan | None = None
        if len(self.plan) == 0:
            L, n = max(ds.bucket_rows.items(), key=lambda kv: kv[0] * kv[1])
            raise UserError(
                f"tokens_per_step {tokens_per_step} is more than any bucket holds (largest: "
                f"{n} rows x {L} tokens); lower tokens_per_step"
            )

    # ---- plan and epochs ---------------------------------------------------------------------
    @property
    def plan(self) -> Plan:
        """This epoch's plan (built once per epoch)."""
        if self._plan is None or self._plan.epoch != self._epoch:
            self._plan = build_plan(
                self.ds.bucket_rows, self.tokens_per_step, self.curriculum, self.cycles,
                self.seed, self._epoch, self.mode, self.oom_probe, self.mixture,
            )  # fmt: skip
        return self._plan

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
        return len(self.plan)

    def __iter__(self) -> Iterator[Batch]:
        if self._step >= len(self.plan):  # the epoch is done: go on to the next one
            self._epoch, self._step = self._epoch + 1, 0
        plan, start = self.plan, self._step
        source: Any
        if self.world.num_workers == 0:
            source = (make_batch(self.ds, plan, s, self.world) for s in range(start, len(plan)))
        else:
            source = DataLoader(
                _StepStream(self.ds, plan, self.world, start),
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
    def _identity(self) -> dict[str, Any]:
        return {
            "dataset": self.ds.fingerprint,
            "seed": self.seed,
            "curriculum": self.curriculum.to_json(),
            "cycles": self.cycles,
            "tokens_per_step": self.tokens_per_step,
            "mode": self.mode,
            "oom_probe": self.oom_probe,
            "mixture": _mixture_json(self.mixture),
        }

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
            if key == "curriculum" and theirs is not None:
                theirs = resolve_curriculum(theirs).to_json()
            if theirs != ours:
                raise UserError(
                    f"cannot resume: {key} is {theirs!r} in the checkpoint but {ours!r} in this "
                    f"loader; construct the loader with the checkpoint's {key}"
                )
        epoch, step = int(state["epoch"]), int(state["step"])
        self._epoch, self._step = epoch, 0
        if not 0 <= step <= len(self.plan):
            raise UserError(f"loader state step {step} is outside epoch {epoch} (0..{len(self)})")
        self._step = step

    def summary(self) -> dict[str, Any]:
        """The epoch plan's summary plus this rank's share (JSON-serialisable)."""
        s = self.plan.summary()
        W = self.world.world_size
        s["world_size"], s["rank"], s["num_workers"] = W, self.world.rank, self.world.num_workers
        s["tokens_per_rank_step"] = self.tokens_per_step // W
        for b in s["buckets"]:
            b["rows_per_rank"] = b["rows_per_batch"] // W
        s["next_step"] = self._step
        return s
