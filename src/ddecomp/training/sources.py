"""Per-source metrics: what the curriculum does to each source of a blend.

A :class:`~ddecomp.data.blend.Blend`'s batches (and those of a dataset prepared with
``--source-per-input``, :mod:`ddecomp.data.sources`) carry each row's source (``batch["source"]``,
:mod:`ddecomp.loading.vsl`). The reference trainer then asks :func:`~ddecomp.training.step.
train_step` for each row's summed loss (the same cross entropy, reduced per row instead of
once) and :class:`SourceMetrics` turns it into, per source and step, the mean training loss
over that source's targets and the target count (all ranks summed, one extra ``all_sum`` of
``2 * sources`` numbers), logged in ``metrics.jsonl`` as ``source_loss`` and
``source_targets``; the counts add up to the step's targets. Held-out evaluation reports loss
per source and length the same way (:class:`SourceEval`). Names are the sources' directory
names (their full paths when two share a name) or the recorded input names.

Cost per step: a per-row reduction of the per-token losses, an ``index_add`` over rows and one
small all-reduce (``benchmarks/bench_sources.py``).
"""

from __future__ import annotations

from typing import Any

import torch

from ddecomp.data.sources import row_sources, source_names
from ddecomp.loading.protocols import IGNORE_INDEX, Batch
from ddecomp.loading.world import World
from ddecomp.training.distributed import all_sum


def per_source(
    names: list[str], sums: list[float], counts: list[float]
) -> tuple[dict[str, float | None], dict[str, int]]:
    """``({name: mean loss or None}, {name: targets})`` from per-source sums and counts."""
    loss = {n: (s / c if c else None) for n, s, c in zip(names, sums, counts, strict=True)}
    return loss, {n: int(c) for n, c in zip(names, counts, strict=True)}


class SourceMetrics:
    """Per-source loss and targets of each training step (see the module docstring)."""

    def __init__(self, names: list[str], device: torch.device) -> None:
        self.names, self.device = names, device

    @classmethod
    def for_data(cls, data: object, device: torch.device) -> SourceMetrics | None:
        names = source_names(data)
        return None if names is None else cls(names, device)

    def row_buffer(self, rows: int) -> torch.Tensor:
        """Where :func:`~ddecomp.training.step.train_step` writes each row's summed loss."""
        return torch.zeros(rows, dtype=torch.float32, device=self.device)

    def record(self, batch: Batch, row_loss: torch.Tensor, world: World) -> dict[str, Any]:
        """``{"source_loss": {name: mean}, "source_targets": {name: n}}`` of this step, all
        ranks summed."""
        n = len(self.names)
        src = batch["source"]
        targets = (batch["labels"] != IGNORE_INDEX).sum(dim=1).double()
        both = torch.zeros(2 * n, dtype=torch.float64, device=self.device)
        both[:n].index_add_(0, src.to(self.device), row_loss.double())
        both[n:] = torch.bincount(src, weights=targets, minlength=n).to(self.device)
        all_sum(both, world)
        vals = both.tolist()
        loss, counts = per_source(self.names, vals[:n], vals[n:])
        return {"source_loss": loss, "source_targets": counts}


class SourceEval:
    """Held-out loss per source and length of one evaluation: ``val_loss_by_source`` and
    ``val_tokens_by_source`` (``{name: {"L": ...}}``) next to :func:`~ddecomp.training.evaluate.
    evaluate`'s per-length numbers, over the same rows."""

    def __init__(self, data: object, names: list[str], lengths: list[int], device: torch.device):
        self.data, self.names, self.lengths = data, names, lengths
        self.sums = torch.zeros((2, len(lengths), len(names)), dtype=torch.float64, device=device)

    @classmethod
    def for_data(cls, data: object, lengths: list[int], device: torch.device) -> SourceEval | None:
        names = source_names(data)
        return None if names is None else cls(data, names, lengths, device)

    def add(self, L: int, idx: Any, token_loss: torch.Tensor, labels: torch.Tensor) -> None:
        """Rows ``idx`` of bucket ``L`` (epoch 0, as evaluated) with their per-token losses."""
        src = row_sources(self.data, L, idx, 0)
        assert src is not None, "data with source names has row sources"
        s = torch.from_numpy(src).to(self.sums.device)
        i = self.lengths.index(L)
        self.sums[0, i].index_add_(0, s, token_loss.sum(dim=1).double())
        self.sums[1, i].index_add_(0, s, (labels != IGNORE_INDEX).sum(dim=1).double())

    def result(self, world: World) -> dict[str, Any]:
        all_sum(self.sums, world)
        sums, counts = self.sums.tolist()
        loss: dict[str, dict[str, float | None]] = {n: {} for n in self.names}
        tokens: dict[str, dict[str, int]] = {n: {} for n in self.names}
        for i, L in enumerate(self.lengths):
            got, n = per_source(self.names, sums[i], counts[i])
            for name in self.names:
                if n[name]:
                    loss[name][str(L)], tokens[name][str(L)] = got[name], n[name]
        return {"val_loss_by_source": loss, "val_tokens_by_source": tokens}
