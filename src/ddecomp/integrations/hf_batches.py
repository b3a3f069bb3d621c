"""What :class:`~ddecomp.integrations.hf.DDTrainer` refuses, and the micro-batches it hands HF.

**One global step = one optimizer update.** The HF Trainer pulls ``gradient_accumulation_steps
= k`` batches per update from its train "dataloader"; here that is :class:`MicroBatches`, which
cuts each rank's batch of a global step into ``k`` row slices of equal size
(:func:`ddecomp.training.microbatch.split_batch`; a row, one document piece, is never cut). At
length ``L`` a rank holds ``tokens_per_step / (world_size * L)`` rows, a power-of-two multiple of
the longest step's, so ``k`` must divide the rows of the longest step length in the plan;
anything else is refused in one line (it would make micro-batches of unequal size, or cut rows).
Every micro-batch therefore holds ``tokens_per_step / (world_size * k)`` tokens.

**Settings the loader decides** (refused with a :class:`~ddecomp.errors.UserError` unless left
at their defaults, :data:`LOADER_DECIDES`): the per-device batch size (rows per step come from
the plan), the number of epochs (the plan is the run; ``max_steps`` defaults to
``len(loader)``), DataLoader workers, prefetching, drop-last and sampling (the loader has its own
workers and order), ``auto_find_batch_size``, label smoothing (the loss is plain summed cross
entropy over the step's targets); also ``max_steps`` beyond the plan, accelerate's
``dispatch_batches`` / ``split_batches`` (batches are never re-sharded), ``DataParallel`` (use
torchrun), and a loader whose rank or world size differs from the Trainer's.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, NotRequired, TypedDict

from torch import Tensor

from ddecomp.errors import UserError
from ddecomp.loading.base import StepLoader
from ddecomp.loading.protocols import Batch
from ddecomp.training.microbatch import split_batch

if TYPE_CHECKING:
    from transformers import TrainingArguments

LOADER_DECIDES: dict[str, str] = {
    "per_device_train_batch_size": "rows per step come from the loader's plan (tokens_per_step)",
    "num_train_epochs": "the loader's plan is the run (len(loader) global steps; or max_steps)",
    "dataloader_num_workers": "set workers on the loader's World (num_workers)",
    "dataloader_prefetch_factor": "the loader builds its own batches",
    "dataloader_persistent_workers": "the loader builds its own batches",
    "dataloader_drop_last": "every global step of the plan is trained",
    "train_sampling_strategy": "the loader's plan fixes the order",
    "auto_find_batch_size": "rows per step come from the loader's plan (tokens_per_step)",
    "label_smoothing_factor": "the loss is the summed cross entropy over the step's targets",
}
"""TrainingArguments fields that must stay at their defaults, and why."""

EVAL_DECIDES = {"per_device_eval_batch_size": "eval rows per step come from eval_loader's plan"}


class MicroBatch(TypedDict):
    """What the Trainer passes to ``compute_loss``: a row slice of one rank's batch of global
    step ``dd_step`` (micro-batch ``dd_micro`` of ``k``); ``labels`` are next tokens already."""

    input_ids: Tensor
    labels: Tensor
    dd_epoch: int
    dd_step: int
    dd_seq_len: int
    dd_micro: int
    position_ids: NotRequired[Tensor]
    cu_seqlens: NotRequired[Tensor]


def _default(args: TrainingArguments, name: str) -> object:
    import dataclasses

    field = {f.name: f for f in dataclasses.fields(args)}[name]
    return field.default


def micro_batches(batch: Batch, k: int) -> list[MicroBatch]:
    """``batch`` cut into ``k`` equal row slices (views; ``cu_seqlens`` re-based per slice)."""
    rows, L = batch["input_ids"].shape[0], batch["seq_len"]
    assert rows % k == 0, f"{rows} rows do not split into {k} micro-batches (checked at init)"
    out: list[MicroBatch] = []
    for i, mb in enumerate(split_batch(batch, rows // k * L)):
        m: MicroBatch = {
            "input_ids": mb["input_ids"],
            "labels": mb["labels"],
            "dd_epoch": batch["epoch"],
            "dd_step": batch["step"],
            "dd_seq_len": L,
            "dd_micro": i,
        }
        if "position_ids" in mb:
            m["position_ids"] = mb["position_ids"]
        if "cu_seqlens" in mb:
            m["cu_seqlens"] = mb["cu_seqlens"]
        out.append(m)
    assert len(out) == k
    return out


class MicroBatches:
    """The train "dataloader" the Trainer iterates: ``k`` micro-batches per global step, in the
    loader's order, never wrapped by accelerate. ``len`` counts micro-batches (HF divides it by
    ``gradient_accumulation_steps``); ``set_epoch`` is the loader's (a resumed epoch keeps its
    step)."""

    def __init__(self, loader: StepLoader, k: int) -> None:
        self.loader, self.k = loader, k

    def __len__(self) -> int:
        return len(self.loader) * self.k

    def set_epoch(self, epoch: int) -> None:
        self.loader.set_epoch(epoch)

    def __iter__(self) -> Iterator[MicroBatch]:
        for batch in self.loader:
            yield from micro_batches(batch, self.k)


def _check_loader(loader: object, name: str, args: TrainingArguments) -> StepLoader:
    if not isinstance(loader, StepLoader):
        raise UserError(
            f"{name} is a {type(loader).__name__}, not a ddecomp loader; pass a VSLLoader "
            "(or ConcatChunkLoader / PackedLoader) built on your dataset"
        )
    w = loader.world
    if (w.rank, w.world_size) != (args.process_index, args.world_size):
        raise UserError(
            f"{name} serves rank {w.rank} of {w.world_size} but the Trainer runs as process "
            f"{args.process_index} of {args.world_size}; build the loader after TrainingArguments "
            "(World.detect() then reads torch.distributed) or pass world= to match"
        )
    return loader


def check_settings(
    args: TrainingArguments, loader: object, eval_loader: object | None
) -> tuple[StepLoader, StepLoader | None, int]:
    """Refuse every TrainingArguments setting that conflicts with the loaders (one line each);
    return the two loaders and the run's ``max_steps`` (the plan's steps when unset)."""
    train = _check_loader(loader, "train_loader", args)
    ev = None if eval_loader is None else _check_loader(eval_loader, "eval_loader", args)
    decides = {**LOADER_DECIDES, **(EVAL_DECIDES if ev is not None else {})}
    for name, why in decides.items():
        value, default = getattr(args, name), _default(args, name)
        if value != default:
            raise UserError(
                f"TrainingArguments {name}={value!r} conflicts with the ddecomp loader: {why}; "
                f"leave it at its default ({default!r})"
            )
    acc = args.accelerator_config
    for name in ("dispatch_batches", "split_batches"):
        if getattr(acc, name, None):
            raise UserError(
                f"accelerator_config {name}=True would re-shard the ddecomp loader's batches, "
                "which already hold each rank's rows; leave it unset"
            )
    if args.n_gpu > 1:
        raise UserError(
            f"DataParallel over {args.n_gpu} GPUs splits each batch again; launch one process "
            "per GPU with torchrun (DistributedDataParallel)"
        )
    if args.eval_strategy != "no" and ev is None:
        raise UserError(
            f"eval_strategy={args.eval_strategy!r} needs eval_loader= (a ddecomp loader)"
        )
    k = args.gradient_accumulation_steps
    W = train.world.world_size
    L = max(train.step_lengths)  # the fewest rows; every other length holds 2^j times as many
    rows = train.tokens_per_step // (W * L)
    if rows % k:
        raise UserError(
            f"gradient_accumulation_steps {k} does not divide the {rows} rows per rank of a "
            f"{L}-token step (tokens_per_step {train.tokens_per_step} / world size {W} / {L}); "
            f"use a divisor of {rows} or raise tokens_per_step"
        )
    n = len(train)
    if args.max_steps > n:
        raise UserError(
            f"max_steps {args.max_steps} is more than the loader's plan of {n} global steps; "
            "plan a longer run (VSLLoader(total_tokens=...)) or leave max_steps unset"
        )
    return train, ev, (n if args.max_steps <= 0 else args.max_steps)
