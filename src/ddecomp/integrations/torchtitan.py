"""torchtitan 0.3.0: DD's flat layout as a torchtitan dataloader (``ddecomp[torchtitan]``).

torchtitan trains on a fixed ``[local_batch_size, seq_len]`` token block per micro-batch and finds
document boundaries where ``positions`` restarts at 0 (its ``Decoder.get_attention_masks`` builds
the FlexAttention block mask or the varlen ``cu_seqlens`` from them). DD's ``layout="flat"``
(:mod:`ddecomp.loading.flat`) is exactly that: every step one ``[1, T]`` stream per rank whose
``position_ids`` restart at every sequence (and packed piece) start. :class:`DDDataLoader` serves
it through torchtitan's own interfaces:

- a :class:`torchtitan.components.dataloader.BaseDataLoader` (``Stateful``) whose ``Config``
  ``build`` takes the arguments torchtitan's ``Trainer`` passes (``dp_world_size``, ``dp_rank``,
  ``tokenizer``, ``seq_len``, ``local_batch_size``, ``snapshot_every_n_steps``), so
  ``config.dataloader = DDDataLoader.Config(dataset_path=DIR)`` plugs it into a torchtitan run;
- batches ``({"input": ids, "positions": pos}, labels)``, int64 ``[local_batch_size, seq_len]``:
  one DD step per batch, its ``T = seq_len * local_batch_size`` tokens per dp rank cut into rows
  of ``seq_len`` (a multiple of the longest bucket, so no sequence crosses a row); labels use
  ``-100`` (torchtitan's ``IGNORE_INDEX``) where ddecomp ignores a target. Tokens per step (all
  dp ranks) are ``seq_len * local_batch_size * dp_world_size``; torchtitan's gradient
  accumulation then trains several DD steps per optimizer step (keep it at one to keep DD's
  one-length-per-step rule);
- state: ``{"dp_rank_<r>": <the VSLLoader state as JSON>, "world_size": W}``, per dp rank as
  torchtitan's own loaders do, so its checkpointer (``torch.distributed.checkpoint``) saves and
  restores it with the model; a restored loader continues at exactly the next batch. A missing
  or foreign state is refused in one line (torchtitan's loaders only warn and restart the data).

Whether torchtitan 0.3.0's trainer runs on the CPU with torch 2.13.0: **not as shipped**, and
with three stand-ins it does (``benchmarks/gpu_torchtitan.py --smoke``, tested). ``import
torchtitan.trainer`` needs triton (``torchtitan.models.common`` imports
``torchtitan.distributed.minimal_async_ep.kernels``); the CPU build of torch does not install it,
so the ``torchtitan`` extra adds it (triton 3.9.0, a 286 MB wheel). Then: (1) its device is
``torchtitan.tools.utils.device_type`` = ``_get_available_device_type() or "cuda"``, copied into
five modules at import, and ``Trainer.__init__`` calls ``torch.cuda.set_device``: there is no CPU
option, so the smoke run sets ``device_type = "cpu"`` and a small device module in those modules;
(2) its language-model attention backends are GPU kernels (FlexAttention: "does not support
backward on CPU"; varlen: no CPU kernel for ``aten::_flash_attention_forward``; SDPA is refused
for language models since it cannot read ``positions``), so the smoke run replaces
``varlen_attn`` in torchtitan's attention module by an exact SDPA over the block-diagonal causal
mask of the ``cu_seqlens`` torchtitan built from our positions; (3) on any device,
``Trainer.train()`` calls ``torch.distributed.set_timeout`` after the first step, which torch
2.13.0 does not have (its ``distributed_c10d._set_pg_timeout`` takes the same arguments): the
benchmark aliases it, on the GPU too. Everything else is torchtitan's own code: its batch
generator, masks from ``positions``, loss, AdamW, LR schedule and CheckpointManager; the smoke
run checks every trained batch is the plan's next step, rows once, the loss falls (8.05 to 4.17
in 8 steps) and a resume from its step-4 checkpoint trains the same batches with the same losses
(exactly, on the CPU). The tests here also drive the loader through torchtitan's interfaces
(``Config.build`` with the trainer's arguments, ``create_varlen_metadata_for_document`` and
``get_document_mask_mod`` on our positions, DCP save and load per dp rank under gloo).

Gradient accumulation (``global_batch_size`` above ``local_batch_size * dp``) and pipeline
micro-batches make torchtitan take several DD steps per optimizer step; the loader cannot see
that (the trainer does not pass it), so keep both at one to keep DD's one length per step.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torchtitan.components.dataloader import BaseDataLoader

from ddecomp.errors import UserError
from ddecomp.loading.protocols import BucketData
from ddecomp.loading.vsl import VSLLoader
from ddecomp.loading.world import World


class DDDataLoader(BaseDataLoader):
    """DD's variable-sequence-length steps as torchtitan batches; see the module docstring.

    ``data``: a :class:`~ddecomp.loading.protocols.BucketData` (a dataset, a blend, a rebucketed
    view) instead of ``config.dataset_path`` (a prepared dataset directory).
    """

    @dataclass(kw_only=True, slots=True)
    class Config(BaseDataLoader.Config):
        curriculum: str = "grow-p2"
        """DD's curriculum (:data:`ddecomp.loading.curriculum.CURRICULA`)."""
        cycles: int = 8
        """Curriculum cycles, spread over the run."""
        seed: int = 0
        """Seed of the data order."""
        mode: str = "release"
        """How the plan realises the odds (:data:`ddecomp.loading.plan.MODES`)."""
        total_tokens: int | None = None
        """The run's tokens (the plan is the run, then the loader is exhausted); None: pass
        after pass over the data, never exhausted."""

    def __init__(
        self,
        config: Config,
        *,
        dp_world_size: int,
        dp_rank: int,
        seq_len: int,
        local_batch_size: int = 1,
        tokenizer: Any = None,
        snapshot_every_n_steps: int | None = None,
        data: BucketData | None = None,
    ) -> None:
        del tokenizer, snapshot_every_n_steps  # pre-tokenized data; the state is a few numbers
        if data is None:
            if not config.dataset_path:
                raise UserError(
                    "DDDataLoader needs a prepared dataset: set dataloader.dataset_path to the "
                    "directory `ddecomp prepare` wrote"
                )
            from ddecomp.data.dataset import open_dataset

            data = open_dataset(config.dataset_path)
        ints = all(
            isinstance(v, int) and not isinstance(v, bool) for v in (seq_len, local_batch_size)
        )
        if not ints or seq_len < 1 or local_batch_size < 1 or seq_len % data.max_len:
            raise UserError(
                f"torchtitan seq_len {seq_len} must be a multiple of the dataset's longest "
                f"sequence {data.max_len} (local_batch_size {local_batch_size} >= 1), so that no "
                "sequence crosses a row"
            )
        self.dp_rank, self.dp_world_size = int(dp_rank), int(dp_world_size)
        self.seq_len, self.local_batch_size = int(seq_len), int(local_batch_size)
        self._key = f"dp_rank_{self.dp_rank}"
        self.loader = VSLLoader(
            data,
            tokens_per_step=self.seq_len * self.local_batch_size * self.dp_world_size,
            curriculum=config.curriculum,
            cycles=config.cycles,
            seed=config.seed,
            world=World(rank=self.dp_rank, world_size=self.dp_world_size),
            mode=config.mode,
            total_tokens=config.total_tokens,
            layout="flat",
        )
        self.run = config.total_tokens is not None

    def __iter__(self) -> Iterator[tuple[dict[str, torch.Tensor], torch.Tensor]]:
        shape = (self.local_batch_size, self.seq_len)
        while True:
            served = False
            for b in self.loader:  # an iteration at the end of an epoch starts the next one
                served = True
                inputs = {
                    "input": b["input_ids"].reshape(shape),
                    "positions": b["position_ids"].reshape(shape),
                }
                yield inputs, b["labels"].reshape(shape)
            if self.run or not served:  # the run's plan is done (or there is nothing to serve)
                return

    def state_dict(self) -> dict[str, Any]:
        """This dp rank's loader state (JSON text) and the dp world size."""
        return {self._key: json.dumps(self.loader.state_dict()), "world_size": self.dp_world_size}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Continue at exactly the next batch of the saved state."""
        if self._key not in state_dict:
            raise UserError(
                f"the checkpoint's dataloader state has no {self._key!r} (keys: "
                f"{sorted(state_dict)}); it was not written by DDDataLoader on this dp rank"
            )
        if state_dict.get("world_size") != self.dp_world_size:
            raise UserError(
                f"the checkpoint's dataloader state is from dp world size "
                f"{state_dict.get('world_size')!r}, this run has {self.dp_world_size}; resume "
                "with the same data-parallel degree"
            )
        raw = state_dict[self._key]
        try:
            state = json.loads(raw)
        except (TypeError, ValueError, RecursionError) as e:
            raise UserError(
                f"the checkpoint's dataloader state {self._key!r} is not a ddecomp loader state "
                f"(JSON text): {type(e).__name__}"
            ) from None
        self.loader.load_state_dict(state)
