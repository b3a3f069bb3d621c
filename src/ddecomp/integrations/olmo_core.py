"""OLMo-core's Trainer on ddecomp's plan: :class:`DDDataLoader`, a ``TextDataLoaderBase``.

::

    loader = DDDataLoader(ds, global_batch_size=16384, total_tokens=steps * 16384)
    trainer = TrainerConfig(save_folder=..., device="cpu").build(train_module, loader)
    trainer.fit()

Underneath is a :class:`~ddecomp.loading.vsl.VSLLoader` over a ddecomp
:class:`~ddecomp.data.dataset.Dataset` or :class:`~ddecomp.data.blend.Blend`: every global step
takes one bucket ``L`` of the plan and a dp rank its contiguous slice, ``global_batch_size / L``
rows over all ranks, so ``input_ids.numel()`` per rank is ``global_batch_size / dp_world_size``
at every step (OLMo-core checks it), every planned row is served exactly once across ranks, and
the state resumes at the next global step, also at another dp world size whose batch divides.

Batches are what OLMo-core's ``TransformerTrainModule`` consumes: ``input_ids`` ``[rows, L]``,
``labels`` ``[rows, L]`` (the next tokens, ``row[1:]`` of each ``L + 1``-token row: the train
module uses given labels as they are, so all ``L`` targets of a piece are trained, the one at the
piece boundary included; its own ``get_labels`` would shift ``input_ids`` and lose the last), and
for steps holding packed tail rows (``prepare --tails pack``) their labels (padding ignored) plus
``doc_lens`` (int32 ``[rows, max pieces]``, zero-padded, each row's pieces then its padding,
summing to ``L``) and ``max_doc_lens`` (one int per row): OLMo-core's intra-document masking.
Its torch SDPA backend (CPU) refuses intra-document masking; ``document_mask=False`` leaves
those two out (pieces of a tail row then attend to the earlier pieces of their row; the targets
stay exact).

Epochs: OLMo-core counts from 1, ddecomp from 0; ``reshuffle(e)`` serves ddecomp's epoch
``e - 1``. With ``total_tokens`` the plan of epoch 1 is the whole run (use
``Duration.epochs(1)``, the Trainer's default, or ``Duration.steps(len(loader))``).

State: ``{"ddecomp": <VSLLoader state>, "batches_processed", "tokens_processed", "epoch"}`` in
OLMo-core's checkpoints; ``load_state_dict`` refuses a state of another data order (dataset,
seed, curriculum, tokens per step, ...) or a malformed one with a one-line
:class:`~ddecomp.errors.UserError`. The global batch size cannot change mid-run (the plan
depends on it): the setter refuses it.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ddecomp.errors import UserError
from ddecomp.loading.curriculum import Curriculum
from ddecomp.loading.plan import MixtureSpec
from ddecomp.loading.protocols import Batch, BucketData
from ddecomp.loading.vsl import VSLLoader
from ddecomp.loading.world import World

try:
    from olmo_core.data.collator import DataCollator
    from olmo_core.data.data_loader import TextDataLoaderBase
    from olmo_core.distributed.utils import get_rank, get_world_size
except ImportError as e:  # pragma: no cover - the extra is missing
    raise ImportError(
        f"ddecomp.integrations.olmo_core needs OLMo-core ({e}); install the extra: "
        "pip install 'ddecomp[olmo-core]'"
    ) from e

if TYPE_CHECKING:
    from torch.distributed import ProcessGroup

STATE_KEY = "ddecomp"  # the VSLLoader's state inside this loader's state


def doc_lengths(
    cu_seqlens: torch.Tensor, rows: int, seq_len: int
) -> tuple[torch.Tensor, list[int]]:
    """OLMo-core's ``doc_lens`` / ``max_doc_lens`` from ddecomp's ``cu_seqlens`` (flash-attn
    layout over ``rows`` rows of ``seq_len``): ``doc_lens[r]`` are row ``r``'s segment lengths in
    order, zero-padded to the most segments of a row; OLMo-core's
    ``get_cumulative_document_lengths(doc_lens)`` gives ``cu_seqlens`` back."""
    cu = cu_seqlens.to(torch.int64).numpy()
    lens = np.diff(cu)
    row = cu[:-1] // seq_len  # the row each segment starts in (segments never cross rows)
    counts = np.bincount(row, minlength=rows)
    assert counts.size == rows, "cu_seqlens has segments past the last row"
    assert lens.sum() == rows * seq_len, "cu_seqlens does not cover the rows"
    out = np.zeros((rows, int(counts.max())), dtype=np.int32)
    col = np.arange(lens.size) - np.repeat(np.cumsum(counts) - counts, counts)
    out[row, col] = lens
    return torch.from_numpy(out), [int(m) for m in out.max(axis=1)]


def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise UserError(f"{name} {value!r} must be a positive integer")
    return int(value)


def _dp_place(
    group: ProcessGroup | None, dp_rank: int | None, dp_world_size: int | None
) -> tuple[int, int]:
    """``(rank, world size)`` in the data-parallel group: given explicitly (both), or OLMo-core's
    ``get_rank`` / ``get_world_size`` of ``group`` (the default group when None; 0 / 1 when
    torch.distributed is not initialized)."""
    if (dp_rank is None) != (dp_world_size is None):
        raise UserError("give dp_rank and dp_world_size together (or neither: from the dp group)")
    if dp_rank is not None and dp_world_size is not None:
        if group is not None:
            raise UserError("give dp_process_group or dp_rank/dp_world_size, not both")
        w = World(rank=dp_rank, world_size=dp_world_size)  # validates both, one line each
        return w.rank, w.world_size
    return get_rank(group), get_world_size(group)


class DDDataLoader(TextDataLoaderBase):
    """OLMo-core data loader serving ddecomp's plan; see the module docstring.

    ``ds``: a ddecomp :class:`~ddecomp.data.dataset.Dataset` or
    :class:`~ddecomp.data.blend.Blend`. ``global_batch_size``: tokens per global step (OLMo-core's
    unit), a multiple of ``max_len * dp_world_size``. ``curriculum``, ``cycles``, ``seed``,
    ``mode``, ``oom_probe``, ``mixture``, ``total_tokens``: as for
    :class:`~ddecomp.loading.vsl.VSLLoader` (``total_tokens`` plans the whole run as epoch 1).
    ``dp_process_group``: OLMo-core's data-parallel group (default: the default group); or
    ``dp_rank`` and ``dp_world_size`` explicitly. ``num_workers``: DataLoader processes building
    batches (the order never depends on them). ``document_mask``: send ``doc_lens`` /
    ``max_doc_lens`` for packed tail rows (needs an attention backend that masks documents, e.g.
    flash-attn). ``work_dir``: OLMo-core's required local directory; nothing is written there.
    """

    # set by OLMo-core's base class
    _global_batch_size: int
    _epoch: int | None
    batches_processed: int
    tokens_processed: int

    def __init__(
        self,
        ds: BucketData,
        *,
        global_batch_size: int,
        curriculum: str | Sequence[float] | Curriculum = "grow-p2",
        cycles: int = 8,
        seed: int = 0,
        mode: str = "release",
        oom_probe: bool = True,
        mixture: MixtureSpec = None,
        total_tokens: int | None = None,
        dp_process_group: ProcessGroup | None = None,
        dp_rank: int | None = None,
        dp_world_size: int | None = None,
        num_workers: int = 0,
        document_mask: bool = True,
        work_dir: str | Path | None = None,
    ) -> None:
        gbs = _positive_int(global_batch_size, "global_batch_size")
        rank, world = _dp_place(dp_process_group, dp_rank, dp_world_size)
        self.vsl = VSLLoader(
            ds,
            tokens_per_step=gbs,
            curriculum=curriculum,
            cycles=cycles,
            seed=seed,
            world=World(rank=rank, world_size=world, num_workers=num_workers),
            mode=mode,
            oom_probe=oom_probe,
            mixture=mixture,
            total_tokens=total_tokens,
        )
        super().__init__(
            collator=DataCollator(pad_token_id=0),  # OLMo-core's evaluators read it; unused here
            work_dir=tempfile.gettempdir() if work_dir is None else work_dir,
            global_batch_size=gbs,
            dp_world_size=world,
            dp_rank=rank,
        )
        self.document_mask = bool(document_mask)

    @property
    def ds(self) -> BucketData:
        return self.vsl.ds

    # ---- the batch size is the plan's ----------------------------------------------------------
    @property
    def global_batch_size(self) -> int:
        return int(self._global_batch_size)

    @global_batch_size.setter
    def global_batch_size(self, value: int) -> None:
        if getattr(self, "_global_batch_size", value) != value:
            raise UserError(
                f"global_batch_size cannot change from {self._global_batch_size} to {value} "
                "mid-run: ddecomp's plan is built for one batch size (no batch-size schedule)"
            )
        self._global_batch_size = value

    # ---- epochs ---------------------------------------------------------------------------------
    @property
    def total_batches(self) -> int:
        """Global steps of the current epoch's plan (epoch 1 before ``reshuffle``)."""
        return self.vsl.steps_in_epoch((self._epoch or 1) - 1)

    def batches_in_epoch(self, epoch: int) -> int:
        return self.vsl.steps_in_epoch(_olmo_epoch(epoch) - 1)

    def reshuffle(self, epoch: int | None = None, **kwargs: Any) -> None:
        """Serve OLMo-core epoch ``epoch`` (ddecomp's ``epoch - 1``; default: the next one), from
        its first step, or from the restored step when it is the epoch of a loaded state."""
        del kwargs
        e = (1 if self._epoch is None else self._epoch + 1) if epoch is None else epoch
        e = _olmo_epoch(e)
        self._epoch = e
        self.vsl.set_epoch(e - 1)
        self.batches_processed = self.vsl.step
        self.tokens_processed = self.vsl.step * self.global_batch_size

    def _iter_batches(self) -> Iterable[dict[str, Any]]:
        if self._epoch is None:
            raise UserError("call reshuffle(epoch) before iterating (OLMo-core's Trainer does)")
        assert self.vsl.epoch == self._epoch - 1, (self.vsl.epoch, self._epoch)
        if self.vsl.step >= len(self.vsl):  # this epoch is done: never roll over into the next
            return
        for b in self.vsl:  # from the restored step to the epoch's end
            yield self.to_olmo(b)

    def to_olmo(self, b: Batch) -> dict[str, Any]:
        """A ddecomp batch as OLMo-core's train module takes it (tensors and lists only)."""
        out: dict[str, Any] = {"input_ids": b["input_ids"], "labels": b["labels"]}
        if self.document_mask and "cu_seqlens" in b:
            rows, L = b["input_ids"].shape
            out["doc_lens"], out["max_doc_lens"] = doc_lengths(b["cu_seqlens"], rows, L)
        return out

    def get_mock_batch(self) -> dict[str, Any]:
        """This rank's batch of the epoch's first step at its longest length (real rows, the
        largest activations the run will see) for OLMo-core's dry run; the position is kept."""
        e = (self._epoch or 1) - 1
        plan = self.vsl.plan_for(e)
        s = int(np.argmax(plan.step_length))
        return self.to_olmo(self.vsl.make_step(e, s))

    # ---- state ----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            STATE_KEY: self.vsl.state_dict(),
            "batches_processed": self.batches_processed,
            "tokens_processed": self.tokens_processed,
            "epoch": self._epoch,
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Continue at exactly the next global step; refuse another data order or a malformed
        state with one line. The position comes from the ddecomp state alone."""
        if not isinstance(state_dict, Mapping):
            raise UserError(f"OLMo-core data loader state is a {type(state_dict).__name__}")
        if STATE_KEY not in state_dict:
            raise UserError(
                f"the checkpoint's data loader state has no {STATE_KEY!r} field (keys "
                f"{sorted(map(str, state_dict))[:6]}); it was not written by ddecomp's DDDataLoader"
            )
        self.vsl.load_state_dict(state_dict[STATE_KEY])
        self._epoch = self.vsl.epoch + 1
        self.batches_processed = self.vsl.step
        self.tokens_processed = self.vsl.step * self.global_batch_size


def _olmo_epoch(epoch: object) -> int:
    if isinstance(epoch, bool) or not isinstance(epoch, int | np.integer) or epoch < 1:
        raise UserError(f"epoch {epoch!r} must be an integer >= 1 (OLMo-core counts from 1)")
    return int(epoch)
