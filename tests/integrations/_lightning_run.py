"""A real Lightning run over DDDataModule, in this process or as one rank under torchrun.

The corpus is the trainer tests' learnable corpus (:mod:`tests.training._corpus`) with every
token's stream position in its high bits: ``token = position << 6 | learnable``, EOS
``2**31 - 1`` (its low bits are the corpus's EOS 63). The model sees ``token & 63`` (a 64-token
vocabulary, learnable), the test sees ``token >> 6`` (which row of the token file was served).

    python -m torch.distributed.run --nproc-per-node 2 tests/integrations/_lightning_run.py \
        DATA OUT --max-steps 12 [--ckpt-every 4] [--resume CKPT] [--flavour pytorch_lightning]

writes ``OUT/rank{r}.json``: per step the epoch, step, length, row starts, rows and mean loss.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

if __name__ == "__main__":  # run as a script by torchrun: import this checkout's tests package
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ddecomp.data.dataset import open_dataset
from ddecomp.integrations.lightning import datamodule_class, dd_loss
from ddecomp.loading.protocols import IGNORE_INDEX
from ddecomp.loading.vsl import VSLLoader
from ddecomp.training.model import GPT, model_config
from tests.training._corpus import EOS as LEARN_EOS
from tests.training._corpus import learnable_tokens

EOS = 2**31 - 1
TPS = 1024  # tokens per step: max_len 128 x 2 ranks x 4
assert EOS & 63 == LEARN_EOS


def identity_learnable_tokens(n_tokens: int = 60_000, seed: int = 0) -> np.ndarray:
    low = learnable_tokens(n_tokens, seed).astype(np.uint32)
    toks = (np.arange(low.size, dtype=np.uint32) << 6) | low
    toks[low == LEARN_EOS] = EOS
    return toks


def make_data(root: Path, n_tokens: int = 60_000) -> np.ndarray:
    from ddecomp.preparing.pipeline import TokensConfig, prepare_tokens

    toks = identity_learnable_tokens(n_tokens)
    prepare_tokens(TokensConfig(toks, root, eos_id=EOS, min_len=16, max_len=128, overwrite=True))
    return toks


def make_loader(data: Path, total_steps: int | None = 24, **kw: Any) -> VSLLoader:
    total = None if total_steps is None else total_steps * TPS
    return VSLLoader(open_dataset(data), tokens_per_step=TPS, total_tokens=total, **kw)


def module_class(flavour: str | None = None) -> type[Any]:
    """A LightningModule over the tiny reference GPT that records what it trains."""
    from ddecomp.integrations.lightning import _lightning

    pl = _lightning(flavour)

    class LM(pl.LightningModule):  # type: ignore[name-defined]
        def __init__(self, lr: float = 3e-3) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.model = GPT(model_config("tiny", 64))
            self.lr = lr
            self.records: list[dict[str, Any]] = []

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            labels = batch["labels"]
            low = {**batch, "labels": torch.where(labels == IGNORE_INDEX, labels, labels & 63)}
            out = dd_loss(self.model(batch["input_ids"] & 63), low)
            rows = torch.cat([batch["input_ids"], labels[:, -1:]], dim=1)
            self.records.append({
                "epoch": int(batch["epoch"]), "step": int(batch["step"]),
                "seq_len": int(batch["seq_len"]), "rows": rows.tolist(),
                "starts": (rows[:, 0] >> 6).tolist(), "loss": float(out.mean),
                "global_step": int(self.trainer.global_step),
            })  # fmt: skip
            return out.loss

        def configure_optimizers(self) -> Any:
            return torch.optim.AdamW(self.model.parameters(), lr=self.lr, betas=(0.9, 0.95))

    return LM


def trainer(flavour: str | None = None, **kw: Any) -> Any:
    from ddecomp.integrations.lightning import _lightning

    pl = _lightning(flavour)
    base = dict(
        accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
    )  # fmt: skip
    return pl.Trainer(**{**base, **kw})


def checkpointer(dirpath: Path, every: int, flavour: str | None = None) -> Any:
    from ddecomp.integrations.lightning import _lightning

    pl = _lightning(flavour)
    return pl.callbacks.ModelCheckpoint(
        dirpath=str(dirpath), every_n_train_steps=every, save_top_k=-1, filename="{step}"
    )


def fit(
    data: Path,
    max_steps: int,
    *,
    ckpt_dir: Path | None = None,
    ckpt_every: int = 0,
    resume: str | None = None,
    flavour: str | None = None,
    total_steps: int | None = 24,
    **trainer_kw: Any,
) -> tuple[list[dict[str, Any]], Any, Any]:
    """Train ``max_steps`` (records, the trainer, the DataModule)."""
    dm = datamodule_class(flavour)(make_loader(data, total_steps))
    lm = module_class(flavour)()
    cbs = [checkpointer(ckpt_dir, ckpt_every, flavour)] if ckpt_dir and ckpt_every else []
    t = trainer(
        flavour, max_steps=max_steps, callbacks=cbs, enable_checkpointing=bool(cbs), **trainer_kw
    )
    t.fit(lm, datamodule=dm, ckpt_path=resume)
    return lm.records, t, dm


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--max-steps", type=int, required=True)
    ap.add_argument("--ckpt-every", type=int, default=0)
    ap.add_argument("--resume")
    ap.add_argument("--flavour")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    records, t, dm = fit(
        a.data, a.max_steps, ckpt_dir=a.out / "ckpt", ckpt_every=a.ckpt_every, resume=a.resume,
        flavour=a.flavour, strategy="ddp", devices=2,
    )  # fmt: skip
    served = t.fit_loop._combined_loader.flattened[0]
    info = {
        "rank": t.global_rank, "world_size": t.world_size,
        "loader_world": [dm.train_loader.world.rank, dm.train_loader.world.world_size],
        "served_is_datamodule_iterable": served is dm.train_dataloader(),
        "records": records,
    }  # fmt: skip
    (a.out / f"rank{t.global_rank}.json").write_text(json.dumps(info))


if __name__ == "__main__":
    main()
