"""Shared by the HF Trainer tests: tiny models from configs, a recording DDTrainer, datasets.

Importing this module needs transformers; test modules importorskip it first."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import LlamaConfig, LlamaForCausalLM, TrainingArguments

from ddecomp.integrations.hf import DDTrainer
from ddecomp.preparing.pipeline import TokensConfig, prepare_tokens
from tests.training._corpus import EOS, learnable_tokens

TPS = 256  # tokens per global step: a multiple of max_len 128 x 2 ranks


def make_data(root: Path, tails: bool = False, n_tokens: int = 60_000) -> Path:
    """The learnable corpus (vocabulary 64, lengths 16..128); ``tails``: ``--tails pack`` with
    16-target tail rows (their steps carry ``position_ids`` / ``cu_seqlens``)."""
    extra: dict[str, Any] = {"tails": "pack", "tail_len": 16} if tails else {}
    cfg = TokensConfig(learnable_tokens(n_tokens, 1), root, eos_id=EOS, min_len=16, max_len=128,
                       vocab_size=64, val_fraction=0.05, **extra)  # fmt: skip
    prepare_tokens(cfg)
    return root


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
    )  # fmt: skip
    return LlamaForCausalLM(cfg)


def hf_args(out: Path, **kw: Any) -> TrainingArguments:
    base: dict[str, Any] = dict(
        output_dir=str(out), learning_rate=3e-3, save_strategy="no", report_to="none",
        use_cpu=True, disable_tqdm=True, logging_steps=1000, seed=0,
    )  # fmt: skip
    base.update(kw)
    return TrainingArguments(**base)


class Recording(DDTrainer):
    """A DDTrainer that records what each micro-batch trained: (epoch, step, micro, input_ids,
    labels, loss returned); the loss of a step is the sum over its micro-batches divided by the
    world size."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.seen: list[tuple[int, int, int, torch.Tensor, torch.Tensor, float]] = []
        self.grad_norms: list[float] = []  # before clipping, one per update

    def _clip_grad_norm(self, model: Any) -> Any:
        norm = super()._clip_grad_norm(model)
        self.grad_norms.append(float(norm))
        return norm

    def compute_loss(self, model: Any, inputs: Any, return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:  # fmt: skip
        loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        self.seen.append((inputs["dd_epoch"], inputs["dd_step"], inputs["dd_micro"],
                          inputs["input_ids"].detach().clone(), inputs["labels"].detach().clone(),
                          float(loss.detach())))  # fmt: skip
        return loss

    def step_losses(self) -> dict[int, float]:
        out: dict[int, float] = {}
        for _, s, _, _, _, loss in self.seen:
            out[s] = out.get(s, 0.0) + loss / self.args.world_size
        return out
