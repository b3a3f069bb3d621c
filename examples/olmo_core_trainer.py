"""Dataset Decomposition in OLMo-core's own Trainer: ``DDDataLoader`` serves ddecomp's plan.

    pip install torch==2.13.0 'ddecomp[olmo-core]'
    python examples/olmo_core_trainer.py data    # prepares the default corpus into data/ if missing
    python examples/olmo_core_trainer.py data --steps 80 --save run --stop-at 30   # "preempted"
    python examples/olmo_core_trainer.py data --steps 80 --save run   # resumes at step 31

OLMo-core's ``Trainer`` and ``TransformerTrainModule`` train a tiny llama-like transformer from
OLMo-core's own config (CPU here, no download), at ``--max-len`` 1024 by default (a dataset
prepared to 8192 is served with its longer rows split; nothing is dropped). Every step is one
bucket of the plan, with ``--tokens-per-step`` tokens (OLMo-core's ``global_batch_size``), a
short-to-long curriculum planned over the whole run (``total_tokens``), exact next-token
``labels`` (no target lost at piece boundaries), and the loader's state in OLMo-core's
checkpoints (``--save``): rerun the same command to resume at the next batch (other arguments
plan another run; its state is refused). On GPUs with flash-attn, build the model with
``attn_backend=AttentionBackendName.flash_2`` and datasets prepared with ``--tails pack`` train
with their document mask (``doc_lens``); OLMo-core's torch SDPA backend cannot mask, so this
example leaves the mask out (``document_mask=False``). The default run (30 steps of 4,096
tokens) took 1 CPU-minute on the shared 2-core machine (2026-12-02), imports included.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import torch

import ddecomp
from ddecomp.data.blend import open_sources
from ddecomp.loading.rebucket import rebucket


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("data", nargs="+", help="prepared dataset directories; several are blended")
    ap.add_argument("--shares", help="blend: comma-separated token shares (default: each DIR once)")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--tokens-per-step", type=int, default=4096)
    ap.add_argument("--max-len", type=int, default=1024, help="train at this maximum: longer "
                    "rows are split, nothing dropped (0: the dataset's)")  # fmt: skip
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--save", help="checkpoint folder (default: a new temporary one)")
    ap.add_argument("--stop-at", type=int, help="stop (and checkpoint) at this step, as a "
                    "preempted job would; rerun without it to resume")  # fmt: skip
    args = ap.parse_args()

    # OLMo-core is an extra: imported here, after the arguments, as ddecomp itself never does
    from olmo_core.nn.transformer import TransformerConfig
    from olmo_core.optim import AdamWConfig, CosWithWarmup
    from olmo_core.train import Duration, TrainerConfig
    from olmo_core.train.callbacks import Callback
    from olmo_core.train.train_module import TransformerTrainModuleConfig

    from ddecomp.integrations.olmo_core import DDDataLoader

    if len(args.data) == 1 and not (Path(args.data[0]) / "manifest.json").exists():
        print(f"preparing the default corpus (the stdlib's .py files) into {args.data[0]} ...")
        ddecomp.prepare(ddecomp.PrepareConfig(out=Path(args.data[0]), val_fraction=0.02,
                                              quiet=True))  # fmt: skip
    shares = [float(s) for s in args.shares.split(",")] if args.shares else None
    ds = open_sources(args.data, shares=shares)
    print(ds)
    data = rebucket(ds, args.max_len) if 0 < args.max_len < ds.max_len else ds

    # the whole run is epoch 1 of the plan: 8 curriculum cycles over --steps steps
    loader = DDDataLoader(
        data,
        global_batch_size=args.tokens_per_step,
        curriculum="grow-p2",
        cycles=8,
        total_tokens=args.steps * args.tokens_per_step,
        document_mask=False,  # CPU: torch SDPA has no intra-document masking
    )
    torch.manual_seed(0)
    model = TransformerConfig.llama_like(
        d_model=64, vocab_size=ds.vocab_size, n_layers=2, n_heads=4, hidden_size_multiple_of=32
    ).build(init_device="cpu")
    train_module = TransformerTrainModuleConfig(
        rank_microbatch_size=loader.rank_batch_size,  # one micro-batch per step
        max_sequence_length=data.max_len,
        optim=AdamWConfig(lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1),
        scheduler=CosWithWarmup(warmup_steps=max(1, args.steps // 20)),  # one schedule, the run
        max_grad_norm=1.0,
    ).build(model, device=torch.device("cpu"))

    class Report(Callback):
        """Prints the step's sequence length and OLMo-core's CE loss every 10 steps."""

        length = 0

        def pre_step(self, batch: dict[str, Any]) -> None:
            self.length = int(batch["input_ids"].shape[1])

        def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
            if step % 10 == 0 and "train/CE loss" in metrics:
                print(f"step {step} len {self.length} loss {metrics['train/CE loss']:.3f}")

    save = args.save or tempfile.mkdtemp(prefix="olmo-core-dd-")
    trainer = TrainerConfig(
        save_folder=save,
        device="cpu",
        max_duration=Duration.steps(args.steps),
        hard_stop=None if args.stop_at is None else Duration.steps(args.stop_at),
        metrics_collect_interval=10,
        callbacks={"report": Report()},
    ).build(train_module, loader)
    trainer.fit()  # resumes from `save` when it holds a checkpoint of this run
    st = loader.state_dict()["ddecomp"]
    print(f"done: {trainer.global_step} steps; loader state {st['epoch']}:{st['step']}; {save}")


if __name__ == "__main__":
    main()
