"""``VSLLoader``: serves a variable-sequence-length epoch, exact across ranks, workers and resume.

The loader only *executes* a :class:`~ddecomp.loading.plan.Plan` (pure, world-size independent): at
global step ``s`` every rank reads its contiguous slice of the step's global batch from bucket
``L = plan.step_length[s]`` with one ``ds.for_epoch(e).rows(L, idx, out=...)`` call (a
:class:`~ddecomp.data.blend.Blend` serves several datasets as one) into a preallocated int64
buffer ``[tokens_per_step // (L * world_size), L + 1]``; ``input_ids`` and ``labels`` are the
views ``buf[:, :-1]`` and ``buf[:, 1:]`` (no further copy; they are not contiguous, use
``.reshape`` / ``.to(device)`` rather than ``.view``). Tokens per rank and step are constant.
A step of a dataset prepared with ``--tails pack`` that holds packed tail rows gets their own
``labels`` (padding ignored) and ``cu_seqlens`` / ``max_seqlen`` / ``position_ids``, so the
trainer masks attention to each piece as it does for the ``pack`` baseline.

Epochs, workers (exact step order whatever their timing) and the resumable state (global
steps, so another world size whose batch divides continues the same order: elastic resume) are
the shared machinery of :class:`~ddecomp.loading.base.StepLoader`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ddecomp.data.sources import row_sources
from ddecomp.errors import UserError
from ddecomp.loading.base import StepLoader
from ddecomp.loading.concat import segments_to_batch
from ddecomp.loading.curriculum import Curriculum, resolve_curriculum
from ddecomp.loading.plan import (
    LEGACY_MODES,
    MixtureSpec,
    Plan,
    build_plan,
    check_seed,
    check_tokens_per_step,
    resolve_mode,
)
from ddecomp.loading.protocols import Batch, BucketData, Prefetching
from ddecomp.loading.world import WorldSpec


def _mixture_json(m: MixtureSpec) -> str | dict[str, int] | None:
    if m is None or isinstance(m, str):
        return m
    return {str(int(L)): int(t) for L, t in sorted(m.items())}


def _run_tokens(total_tokens: object) -> int:
    if isinstance(total_tokens, bool) or not isinstance(total_tokens, int | np.integer):
        raise UserError(f"total_tokens {total_tokens!r} must be an integer (tokens of the run)")
    return int(total_tokens)


def make_batch(
    ds: BucketData, plan: Plan, step: int, idx: np.ndarray, shared: bool = False
) -> Batch:
    """The batch of global step ``step`` from rows ``idx`` (a rank's slice of the step's
    bucket): one gather into an int64 buffer."""
    L = int(plan.step_length[step])
    buf = torch.empty((idx.size, L + 1), dtype=torch.int64)
    if shared:  # in a worker: allocate in shared memory so the hand-over to the main is no copy
        buf.share_memory_()
    packed = ds.for_epoch(plan.epoch).fill(L, idx, out=buf.numpy())
    batch: Batch = {
        "input_ids": buf[:, :-1],
        "labels": buf[:, 1:],
        "seq_len": L,
        "step": step,
        "epoch": plan.epoch,
    }
    if packed is not None:  # tail rows (prepare --tails pack): their labels and document mask
        batch["labels"] = torch.from_numpy(packed.labels)
        batch.update(segments_to_batch(packed.segments, L))
    source = row_sources(ds, L, idx, plan.epoch)  # a blend, or a dataset prepared with sources
    if source is not None:
        batch["source"] = torch.from_numpy(source)
    return batch


class VSLLoader(StepLoader):
    """Variable-sequence-length loader; see the module docstring.

    ``ds``: a :class:`~ddecomp.data.dataset.Dataset` or :class:`~ddecomp.data.blend.Blend` (any
    :class:`~ddecomp.loading.protocols.BucketData`). Options are keyword-only.
    ``curriculum``: a name from :data:`ddecomp.loading.curriculum.CURRICULA` or odds, one per
    bucket of the dataset's range ``min_len..max_len`` (empty buckets included), shortest first.
    ``world``: rank, world size and DataLoader workers; default :meth:`World.detect`
    (``torch.distributed`` when initialized, else torchrun's variables, else one process); a
    data-parallel process group or ``DeviceMesh`` (``mesh["dp"]``) instead serves every rank of a
    replica the same batches (:meth:`World.data_parallel`).
    ``tokens_per_step`` must be a multiple of ``max_len * world_size``.
    ``total_tokens``: the run's tokens. Given, epoch 0's plan is the whole run
    (``total_tokens // tokens_per_step`` steps, bucket budgets by token share, ``cycles`` spread
    over the run; :mod:`ddecomp.loading.budget`), so ``len(loader)`` is the run's steps; a later
    epoch is another run in a new order. None (default): each epoch is one pass over the data.
    ``mode``: ``release`` (default), ``odds``, ``olmo-layout`` or ``symmetric-layout``
    (:mod:`ddecomp.loading.plan`). ``layout``: ``rows`` (default, ``[T / L, L]``) or ``flat``
    (``[1, T]`` with ``cu_seqlens``, the same shape every step; :mod:`ddecomp.loading.flat`).
    """

    def __init__(
        self,
        ds: BucketData,
        *,
        tokens_per_step: int,
        curriculum: str | Sequence[float] | Curriculum = "grow-p2",
        cycles: int = 8,
        seed: int = 0,
        world: WorldSpec = None,
        mode: str = "release",
        oom_probe: bool = True,
        mixture: MixtureSpec = None,
        total_tokens: int | None = None,
        layout: str = "rows",
    ) -> None:
        super().__init__(world, layout)
        self.ds = ds
        # checked once: a runtime Protocol isinstance costs ~50 us, 10% of a 65k-token step
        self._prefetch = ds if isinstance(ds, Prefetching) and ds.prefetch_steps else None
        check_tokens_per_step(tokens_per_step, list(ds.bucket_rows), self.world.world_size)
        self.tokens_per_step = int(tokens_per_step)
        self.curriculum = resolve_curriculum(curriculum)
        self.cycles, self.seed, self.mode = cycles, check_seed(seed), resolve_mode(mode)
        self.oom_probe, self.mixture = oom_probe, mixture
        self.total_tokens = None if total_tokens is None else _run_tokens(total_tokens)
        if len(self.plan) == 0:
            L, n = max(ds.bucket_rows.items(), key=lambda kv: kv[0] * kv[1])
            raise UserError(
                f"tokens_per_step {tokens_per_step} is more than any bucket holds (largest: "
                f"{n} rows x {L} tokens); lower tokens_per_step"
            )

    def _build_plan(self, epoch: int) -> Plan:
        return build_plan(
            self.ds.bucket_rows,
            self.tokens_per_step,
            self.curriculum,
            self.cycles,
            self.seed,
            epoch,
            self.mode,
            self.oom_probe,
            self.mixture,
            self.total_tokens,
        )

    @property
    def step_lengths(self) -> tuple[int, ...]:
        """Bucket lengths with at least one step this epoch (one batch shape each)."""
        return tuple(sorted({int(L) for L in self.plan.step_length.tolist()}))

    @property
    def masked_lengths(self) -> tuple[int, ...]:
        """Step lengths whose batches may carry a document mask (tail rows, ``--tails pack``):
        a compiled model is warmed up for them with and without a mask."""
        packed = set(self.ds.packed_lengths)
        return tuple(L for L in self.step_lengths if L in packed)

    def make_step(self, epoch: int, step: int, shared: bool = False) -> Batch:
        plan = self.plan_for(epoch)
        batch = make_batch(self.ds, plan, step, self.rank_rows(plan, step), shared)
        if self._prefetch is not None:  # remote data
            stride = max(1, self.world.num_workers)  # this worker's next steps
            ahead = step + stride * self._prefetch.prefetch_steps + 1
            for s in range(step + stride, min(len(plan), ahead), stride):
                self._prefetch.prefetch(int(plan.step_length[s]), self.rank_rows(plan, s))
        return self._laid_out(batch)

    # ---- state ---------------------------------------------------------------------------------
    def _identity(self) -> dict[str, Any]:
        return {
            "loader": "vsl",
            "dataset": self.ds.fingerprint,
            "seed": self.seed,
            "curriculum": self.curriculum.to_json(),
            "cycles": self.cycles,
            "tokens_per_step": self.tokens_per_step,
            "mode": self.mode,
            "oom_probe": self.oom_probe,
            "mixture": _mixture_json(self.mixture),
            "total_tokens": self.total_tokens,
        }

    def _canonical(self, key: str, value: Any) -> Any:
        if key == "mode" and isinstance(value, str):
            return LEGACY_MODES.get(value, value)
        return resolve_curriculum(value).to_json() if key == "curriculum" else value

    def summary(self) -> dict[str, Any]:
        """The epoch plan's summary plus this rank's share (JSON-serialisable)."""
        s = self.plan.summary()
        W = self.world.world_size
        s["world_size"], s["rank"], s["num_workers"] = W, self.world.rank, self.world.num_workers
        s["tokens_per_rank_step"] = self.tokens_per_step // W
        for b in s["buckets"]:
            b["rows_per_rank"] = b["rows_per_batch"] // W
        s["next_step"] = self._step
        s["layout"] = self.layout
        return s
