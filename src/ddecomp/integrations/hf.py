"""``DDTrainer``: a Hugging Face ``transformers.Trainer`` trained on a ddecomp loader.

::

    args = TrainingArguments(output_dir="out", learning_rate=3e-3, save_steps=100)
    loader = VSLLoader(open_dataset("data"), tokens_per_step=2**19, total_tokens=...)
    trainer = DDTrainer(model=model, args=args, train_loader=loader, eval_loader=None)
    trainer.train()                                   # or train(resume_from_checkpoint=True)

What it changes in the Trainer, and why (HF's defaults break DD's guarantees):

- **Data**: :meth:`get_train_dataloader` returns :class:`~.hf_batches.MicroBatches` over the
  loader, never ``accelerator.prepare``-d: each rank's batches are served as the loader cut them
  (no dispatching, which concatenates per-process batches and fails on differing lengths,
  accelerate #2023; no second sharding of a rank-aware loader, accelerate #4075).
- **Steps**: one global step of the plan = one optimizer update; ``gradient_accumulation_steps =
  k`` cuts the step's rows into k micro-batches. ``max_steps`` defaults to ``len(loader)`` (the
  plan's steps), so the LR schedule spans the plan. Conflicting settings are refused in one line
  (:func:`~.hf_batches.check_settings`).
- **Loss** (:meth:`compute_loss`): the summed cross entropy of every target of the step (all
  micro-batches, all ranks) divided by the step's target count (``labels != -100``, all-reduced
  in :meth:`get_batch_samples`), computed from the logits on ddecomp's already-shifted labels
  (:mod:`~.hf_loss`). Each micro-batch returns ``world_size * sum / targets``: DDP averages
  gradients over ranks, so the accumulated gradient and the logged loss equal the unsplit
  single-process step's.
- **Checkpoints**: every ``checkpoint-N`` gets the loader's state (:mod:`~.hf_state`);
  ``train(resume_from_checkpoint=...)`` restores it and continues at the exact next global step,
  on any world size the loader allows, without HF's ``skip_first_batches`` replay
  (``ignore_data_skip`` is set). A checkpoint without a loader state, or from another data
  order, is refused in one line.
- **Evaluation**: with ``eval_loader=`` (a ddecomp loader over held-out data) :meth:`evaluate`
  runs epoch 0 of its plan, the same rows every time, and reports the exact token-weighted mean
  ``eval_loss`` (and ``eval_tokens``).
"""

from __future__ import annotations

import copy
import os
from typing import Any

import torch
from torch import Tensor, nn
from transformers import PreTrainedModel, Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, TrainOutput, get_last_checkpoint

from ddecomp.errors import UserError
from ddecomp.integrations.hf_batches import MicroBatch, MicroBatches, check_settings
from ddecomp.integrations.hf_loss import (
    check_packed_masking,
    is_reference_gpt,
    logits_of,
    summed_loss,
)
from ddecomp.integrations.hf_state import read_checkpoint, write_loader_state
from ddecomp.loading.base import StepLoader

_REFUSED_KWARGS = {
    "train_dataset": "pass the ddecomp loader as train_loader=",
    "eval_dataset": "pass a ddecomp loader as eval_loader=",
    "data_collator": "the ddecomp loader builds the batches",
    "compute_loss_func": "DDTrainer computes the exact step loss itself",
}


def _aliases(model: nn.Module) -> set[str]:
    """State-dict names whose tensor an earlier name already holds (tied weights)."""
    seen: set[int] = set()
    out: set[str] = set()
    for k, v in model.state_dict().items():
        if v.data_ptr() in seen:
            out.add(k)
        seen.add(v.data_ptr())
    return out


class _EpochFromLoader(TrainerCallback):
    """``state.epoch`` from the loader's cursor: HF counts it from the batches it iterated, which
    restart at a resume (no batches are skipped here)."""

    def __init__(self, loader: StepLoader) -> None:
        self.loader = loader

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        state.epoch = self.loader.epoch + self.loader.step / max(1, len(self.loader))


class DDTrainer(Trainer):
    """A ``transformers.Trainer`` over ddecomp loaders; see the module docstring.

    ``train_loader``: a :class:`~ddecomp.loading.vsl.VSLLoader` (or a baseline loader) for this
    process (build it after ``TrainingArguments``, which starts ``torch.distributed`` under
    torchrun). ``eval_loader``: an optional ddecomp loader over held-out data. Other keyword
    arguments go to ``Trainer`` (``train_dataset``, ``eval_dataset``, ``data_collator`` and
    ``compute_loss_func`` are refused).
    """

    def __init__(
        self,
        model: nn.Module,
        args: TrainingArguments,
        train_loader: StepLoader,
        eval_loader: StepLoader | None = None,
        **kwargs: Any,
    ) -> None:
        for key, why in _REFUSED_KWARGS.items():
            if kwargs.get(key) is not None:
                raise UserError(f"DDTrainer does not take {key}=: {why}")
        if not isinstance(args, TrainingArguments):
            raise UserError(f"args is a {type(args).__name__}, not a TrainingArguments")
        self.train_loader, self.eval_loader, max_steps = check_settings(
            args, train_loader, eval_loader
        )
        args = copy.copy(args)  # the caller's arguments stay as given
        args.max_steps = max_steps  # the plan's steps unless the user asked for fewer
        args.ignore_data_skip = True  # the loader state resumes the data; never replay batches
        super().__init__(model=model, args=args, eval_dataset=eval_loader, **kwargs)
        self.loss_is_scaled_for_ga = True  # compute_loss normalises over the whole step
        self.add_callback(_EpochFromLoader(self.train_loader))
        self._gpt = is_reference_gpt(model)
        self._micro = MicroBatches(self.train_loader, args.gradient_accumulation_steps)
        self._targets: Tensor | None = None  # the current step's global target count
        self._counts: list[int] = []  # this rank's targets per micro-batch of the step
        self.last_step: dict[str, Any] = {}
        """The last trained micro-batch: epoch, step, seq_len, rows, targets (for callbacks)."""
        if self.train_loader.masked_lengths and not self._gpt:
            vocab = int(getattr(getattr(model, "config", None), "vocab_size", 2))
            check_packed_masking(model, vocab)

    # ---- data ----------------------------------------------------------------------------------
    def get_train_dataloader(self) -> Any:
        """The loader's micro-batches, as they are (no accelerate wrapping, no re-sharding)."""
        return self._micro

    def get_batch_samples(
        self, epoch_iterator: Any, num_batches: int, device: torch.device
    ) -> tuple[list[Any], Tensor | int | None]:
        """The ``k`` micro-batches of one global step and the step's target count over all
        ranks (``labels != -100``; ddecomp labels need no shift)."""
        batches: list[MicroBatch] = []
        for _ in range(num_batches):
            try:
                batches.append(next(epoch_iterator))
            except StopIteration:
                break
        if not batches:
            return batches, None
        steps = {(b["dd_epoch"], b["dd_step"]) for b in batches}
        assert len(steps) == 1, f"an update got micro-batches of steps {steps}"
        assert len(batches) == self._micro.k, f"{len(batches)} micro-batches, {self._micro.k} due"
        counts = [int((b["labels"] != -100).sum()) for b in batches]  # host tensors: no sync
        self._counts = counts
        local = sum(counts)
        t = torch.tensor(float(local), dtype=torch.float64, device=device)
        if self.args.world_size > 1:
            torch.distributed.all_reduce(t)
        self._targets = t
        return batches, t

    # ---- loss ----------------------------------------------------------------------------------
    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Tensor | int | None = None,
    ) -> Any:
        """``world_size * (summed CE of this micro-batch) / (targets of the global step)``: summed
        over micro-batches and averaged over ranks by DDP, the exact step loss and gradient."""
        targets = self._targets if num_items_in_batch is None else num_items_in_batch
        if targets is None:
            raise UserError("compute_loss needs the step's target count; train through DDTrainer")
        logits = logits_of(
            model, inputs["input_ids"], inputs.get("position_ids"), inputs.get("cu_seqlens"),
            gpt=self._gpt,
        )  # fmt: skip
        loss_sum = summed_loss(logits, inputs["labels"])
        micro = inputs["dd_micro"]
        scale = self.args.world_size / torch.clamp(torch.as_tensor(targets), min=1)
        loss = loss_sum * scale.to(loss_sum.device, torch.float32)
        self.last_step = {
            "epoch": inputs["dd_epoch"], "step": inputs["dd_step"],
            "seq_len": inputs["dd_seq_len"], "micro": inputs["dd_micro"],
            "rows": int(inputs["input_ids"].shape[0]),
            "targets": self._counts[micro] if micro < len(self._counts) else None,
        }  # fmt: skip
        return (loss, {"logits": logits}) if return_outputs else loss

    # ---- checkpoints ---------------------------------------------------------------------------
    def _save_checkpoint(self, model: nn.Module, trial: Any) -> None:
        """The loader state first (atomic), then HF's files; ``trainer_state.json`` comes last."""
        if self.args.should_save:
            run_dir = self._get_output_dir(trial=trial)
            folder = os.path.join(run_dir, f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
            state = self.train_loader.state_dict()
            if state["epoch"] == 0:
                assert state["step"] == self.state.global_step, (
                    f"loader at step {state['step']}, trainer at {self.state.global_step}"
                )
            write_loader_state(folder, state, self.state.global_step)
        super()._save_checkpoint(model, trial)

    def _save(
        self, output_dir: str | None = None, state_dict: dict[str, Any] | None = None
    ) -> None:
        """As HF's, but a plain ``nn.Module`` (the reference GPT, tied embedding) is saved with
        each shared tensor once (safetensors refuses shared tensors; HF loads non-strict)."""
        model = self.model
        if state_dict is None and model is not None and not isinstance(model, PreTrainedModel):
            aliases = _aliases(model)
            state_dict = {k: v for k, v in model.state_dict().items() if k not in aliases}
        super()._save(output_dir, state_dict=state_dict)

    def _issue_warnings_after_load(self, load_result: Any) -> None:
        """HF's, which assumes a ``PreTrainedModel``; for a plain module the tied names left out
        by :meth:`_save` are not missing, anything else is refused."""
        model = self.model
        if isinstance(model, PreTrainedModel) or model is None:
            return super()._issue_warnings_after_load(load_result)
        missing = set(load_result.missing_keys) - _aliases(model)
        if missing or load_result.unexpected_keys:
            raise UserError(
                f"the checkpoint's weights do not match {type(model).__name__}: missing "
                f"{sorted(missing)}, unexpected {sorted(load_result.unexpected_keys)}"
            )

    def train(
        self,
        resume_from_checkpoint: str | bool | None = None,
        trial: Any = None,
        ignore_keys_for_eval: list[str] | None = None,
    ) -> TrainOutput:
        """HF's ``train``; on resume the loader continues at the checkpoint's next global step."""
        ckpt: str | None = None
        if resume_from_checkpoint is True:
            out = self.args.output_dir
            ckpt = get_last_checkpoint(out) if out and os.path.isdir(out) else None
            if ckpt is None:
                raise UserError(f"resume_from_checkpoint=True but {out} holds no checkpoint-N")
        elif isinstance(resume_from_checkpoint, str | os.PathLike):
            ckpt = os.fspath(resume_from_checkpoint)
        if ckpt is not None:
            state, global_step = read_checkpoint(ckpt)
            self.train_loader.load_state_dict(state)
            if self.train_loader.epoch == 0 and self.train_loader.step != global_step:
                raise UserError(
                    f"checkpoint {ckpt}: the loader state is at step {self.train_loader.step} "
                    f"but the Trainer at global step {global_step}"
                )
        elif self.train_loader.step != 0:
            raise UserError(
                f"train_loader is at step {self.train_loader.step} of epoch "
                f"{self.train_loader.epoch}; pass a fresh loader, or resume_from_checkpoint"
            )
        return super().train(ckpt, trial, ignore_keys_for_eval)

    # ---- evaluation ----------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(
        self,
        eval_dataset: Any = None,
        ignore_keys: list[str] | None = None,
        metric_key_prefix: str = "eval",
    ) -> dict[str, float]:
        """Exact token-weighted mean loss over epoch 0 of ``eval_loader``'s plan, all ranks."""
        if eval_dataset is not None:
            raise UserError("DDTrainer.evaluate takes no eval_dataset; pass eval_loader= at init")
        loader = self.eval_loader
        if loader is None:
            raise UserError("DDTrainer.evaluate needs eval_loader= (a ddecomp loader)")
        model = self.model
        assert model is not None
        was = model.training
        model.eval()
        total = torch.zeros(2, dtype=torch.float64, device=self.args.device)
        steps = loader.steps_in_epoch(0)
        for s in range(steps):
            b = loader.make_step(0, s)
            dev = {k: v.to(self.args.device) for k, v in b.items() if isinstance(v, Tensor)}
            logits = logits_of(
                model, dev["input_ids"], dev.get("position_ids"), dev.get("cu_seqlens"),
                gpt=self._gpt,
            )  # fmt: skip
            total[0] += summed_loss(logits, dev["labels"]).double()
            total[1] += (dev["labels"] != -100).sum()
        model.train(was)
        if self.args.world_size > 1:
            torch.distributed.all_reduce(total)
        metrics = {
            f"{metric_key_prefix}_loss": float(total[0] / total[1].clamp(min=1)),
            f"{metric_key_prefix}_tokens": float(total[1]),
            f"{metric_key_prefix}_steps": float(steps),
        }
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(
            self.args, self.state, self.control, metrics
        )
        return metrics
