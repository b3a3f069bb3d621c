"""Dataset Decomposition in a Lightning Trainer: ``DDDataModule`` + ``dd_loss``.

    pip install 'ddecomp[lightning]'
    python examples/lightning_trainer.py data                      # prepares data/ if missing
    python examples/lightning_trainer.py data --resume data/lightning/step=20.ckpt
    python examples/lightning_trainer.py data --devices 2          # DDP on 2 CPU processes

The first run prepares the default corpus (the standard library's .py files; ``ddecomp prepare
--out data --min-len 32 --max-len 512 --val-fraction 0.02``) when DATA holds no dataset. Every
step has the same number of tokens but its own sequence length (one bucket per step, the run's
curriculum); Lightning trains the ddecomp loader itself (no DistributedSampler), saves its position
in every checkpoint (``--every`` steps, in DATA/lightning) and resumes at exactly the next step.
The loss is summed over the step's targets on every rank and divided by their total
(``dd_loss``), so two processes train exactly what one would. The model is ddecomp's tiny
reference GPT, built from its config (no download); any ``[B, L] -> [B, L, vocab]`` model works.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

import ddecomp
from ddecomp.errors import UserError
from ddecomp.integrations.lightning import DDDataModule, _lightning, dd_loss
from ddecomp.training.model import GPT, model_config

pl = _lightning()  # lightning.pytorch, else pytorch_lightning


class TinyLM(pl.LightningModule):  # type: ignore[name-defined]
    def __init__(self, vocab_size: int, steps: int, lr: float) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.model = GPT(model_config("tiny", vocab_size))
        self.steps, self.lr = steps, lr

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        out = dd_loss(self.model(batch["input_ids"]), batch)  # the step's exact loss
        rows = batch["input_ids"].shape[0]
        self.log("loss", out.mean, prog_bar=True, batch_size=rows)
        if self.trainer.is_global_zero and self.global_step % 10 == 9:
            print(f"step {self.global_step + 1} len {batch['seq_len']} rows {rows} "
                  f"loss {out.mean.item():.3f}")  # fmt: skip
        return out.loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        out = dd_loss(self.model(batch["input_ids"]), batch)
        self.log("val_loss", out.mean, batch_size=batch["input_ids"].shape[0])

    def configure_optimizers(self) -> Any:
        opt = torch.optim.AdamW(self.parameters(), lr=self.lr, betas=(0.9, 0.95))
        # one schedule over the whole run (not per curriculum cycle)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, self.lr, total_steps=self.steps)
        return [opt], [{"scheduler": sched, "interval": "step"}]


def ensure_dataset(data: Path) -> ddecomp.Dataset:
    if not (data / "manifest.json").exists():
        print(f"preparing the default corpus into {data} (once)", flush=True)
        cfg = ddecomp.PrepareConfig(
            out=data, min_len=32, max_len=512, val_fraction=0.02, quiet=True
        )
        ddecomp.prepare(cfg)
    return ddecomp.open_dataset(data)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("data", type=Path, help="a prepared dataset directory (prepared if missing)")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--tokens-per-step", type=int, default=2048)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--devices", type=int, default=1, help="CPU processes (DDP when > 1)")
    ap.add_argument("--every", type=int, default=20, help="checkpoint every N steps")
    ap.add_argument("--resume", help="a checkpoint this script wrote")
    args = ap.parse_args()
    torch.set_num_threads(1)  # a tiny model gains nothing from more threads per process

    if args.resume and not Path(args.resume).is_file():
        raise UserError(f"--resume {args.resume}: no such checkpoint file")
    ds = ensure_dataset(args.data)
    # total_tokens plans the whole run: len(loader) == steps, the curriculum's cycles end with it
    total = args.steps * args.tokens_per_step
    train = ddecomp.VSLLoader(ds, tokens_per_step=args.tokens_per_step, total_tokens=total)
    try:  # held-out batches, if the dataset has a val split large enough for one step
        vds = ds.for_split("val")
        val = ddecomp.VSLLoader(vds, tokens_per_step=args.tokens_per_step, curriculum="uniform")
    except UserError as e:
        print(f"no validation: {e}")
        val = None
    dm = DDDataModule(train, val)  # rank and world size are set from the Trainer
    ckpt = pl.callbacks.ModelCheckpoint(
        dirpath=str(args.data / "lightning"), every_n_train_steps=args.every, save_top_k=-1,
        filename="{step}",
    )  # fmt: skip
    trainer = pl.Trainer(
        max_steps=len(train), accelerator="cpu", devices=args.devices,
        strategy="ddp" if args.devices > 1 else "auto", callbacks=[ckpt], logger=False,
        val_check_interval=args.every, limit_val_batches=4, num_sanity_val_steps=0,
        enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(TinyLM(ds.vocab_size, len(train), args.lr), datamodule=dm, ckpt_path=args.resume)
    if trainer.is_global_zero:
        s = train.state_dict()
        print(f"done: {trainer.global_step} steps; loader state {s['epoch']}:{s['step']}")


if __name__ == "__main__":
    try:
        main()
    except UserError as e:  # a user mistake: one line, exit 2
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
