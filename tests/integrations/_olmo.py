"""Shared by the OLMo-core adapter tests: a tiny OLMo-core transformer and its Trainer on CPU."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

CE = "train/CE loss"


@contextmanager
def one_thread() -> Iterator[None]:
    """Train with one torch thread (the OLMo-core step is ~10x faster on a shared 2-core box)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def build_trainer(
    loader: Any,
    save: Path,
    steps: int,
    vocab: int,
    callbacks: dict[str, Any],
    load_path: Path | None = None,
    save_interval: int | None = None,
) -> Any:
    """OLMo-core's own Trainer on ``loader``: a 2-layer llama-like model (its own config), AdamW,
    CPU, no FSDP, one process; checkpoints every ``save_interval`` steps into ``save``."""
    from olmo_core.nn.transformer import TransformerConfig
    from olmo_core.optim import AdamWConfig
    from olmo_core.train import Duration, TrainerConfig
    from olmo_core.train.callbacks import CheckpointerCallback
    from olmo_core.train.train_module import TransformerTrainModuleConfig

    torch.manual_seed(0)
    model = TransformerConfig.llama_like(
        d_model=64, vocab_size=vocab, n_layers=2, n_heads=4, hidden_size_multiple_of=32
    ).build(init_device="cpu")
    tm = TransformerTrainModuleConfig(
        rank_microbatch_size=loader.rank_batch_size,
        max_sequence_length=int(loader.ds.max_len),
        optim=AdamWConfig(lr=3e-3, weight_decay=0.0),
    ).build(model, device=torch.device("cpu"))
    cbs = dict(callbacks)
    cbs["checkpointer"] = CheckpointerCallback(save_interval=save_interval or 10**9)
    return TrainerConfig(
        save_folder=str(save),
        load_path=None if load_path is None else str(load_path),
        device="cpu",
        max_duration=Duration.steps(steps),
        metrics_collect_interval=1,
        callbacks=cbs,
    ).build(tm, loader)


def recorder() -> tuple[Any, list[dict[str, torch.Tensor]], dict[int, float]]:
    """An OLMo-core Callback that keeps a copy of every batch the Trainer trains (``pre_step``)
    and the CE loss it logs per step."""
    from olmo_core.train.callbacks import Callback

    batches: list[dict[str, torch.Tensor]] = []
    losses: dict[int, float] = {}

    class Record(Callback):
        def pre_step(self, batch: dict[str, Any]) -> None:
            batches.append({k: v.clone() for k, v in batch.items() if torch.is_tensor(v)})

        def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
            if CE in metrics:
                losses[step] = float(metrics[CE])

    return Record(), batches, losses
