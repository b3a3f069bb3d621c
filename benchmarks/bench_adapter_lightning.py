"""The Lightning adapter's cost: per-step overhead against ddecomp's own step, and resume time.

1. **Per-step overhead.** The same tiny reference GPT (``model_config("tiny", 256)``), the same
   plan (``VSLLoader``, grow-p2, 8 cycles over the run) and the same optimizer (AdamW, gradient
   norm clipped at 1.0), trained ``--steps`` steps twice: by ddecomp's own step
   (:func:`ddecomp.training.step.train_step` in a plain loop over the loader) and by a
   ``lightning.Trainer`` over ``DDDataModule`` with ``dd_loss`` (automatic optimization,
   ``gradient_clip_val=1.0``, no logger, no checkpoints, no progress bar). Timed: the steps after
   ``--warmup`` (loader fetch included), from the end of step ``warmup - 1`` to the end of the last
   step; the two alternate ``--repeats`` times and the medians are compared (one thread).
2. **Resume at step 1,000.** A 65,536-token-per-step plan of 1,100 steps: the time from a fresh
   loader to its step-1,000 batch by ``load_state_dict`` (what ``fit(ckpt_path=...)`` does through
   DDDataModule) against iterating and discarding 1,000 batches first (a skip-based resume, what a
   stateless loader needs; Lightning itself would restart the epoch).

Corpus: synthetic documents (log-normal, mean 600 tokens) with ids folded into 256, prepared with
``min_len 16``, ``max_len 256`` (overhead) and ``max_len 8192`` (resume).

    PYTHONPATH=src python benchmarks/bench_adapter_lightning.py [--steps 200] [--out DIR]
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from benchlib import hardware, synth_tokens

from ddecomp.data.dataset import open_dataset
from ddecomp.integrations.lightning import _lightning, datamodule_class, dd_loss
from ddecomp.loading.vsl import VSLLoader
from ddecomp.preparing.pipeline import TokensConfig, prepare_tokens
from ddecomp.training.model import GPT, model_config
from ddecomp.training.step import train_step

VOCAB = 256
TPS = 4096


def corpus(root: Path, n_tokens: int, max_len: int) -> Path:
    toks = synth_tokens(n_tokens, 600.0, 1.0, seed=0)
    eos = toks == toks.max()
    small = (toks % (VOCAB - 1)).astype(np.uint16)
    small[eos] = VOCAB - 1
    cfg = TokensConfig(small, root, eos_id=VOCAB - 1, vocab_size=VOCAB, min_len=16, max_len=max_len)
    prepare_tokens(cfg)
    return root


def make(data: Path, steps: int) -> tuple[VSLLoader, torch.nn.Module, torch.optim.Optimizer]:
    loader = VSLLoader(open_dataset(data), tokens_per_step=TPS, total_tokens=steps * TPS)
    torch.manual_seed(0)
    model = GPT(model_config("tiny", VOCAB))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95))
    return loader, model, opt


def own_loop(data: Path, steps: int, warmup: int) -> tuple[float, float, list[float]]:
    """Wall and CPU seconds of the timed steps, and every step's loss."""
    loader, model, opt = make(data, steps)
    losses: list[float] = []
    t0 = c0 = 0.0
    for i, b in enumerate(loader):
        x, y = b["input_ids"], b["labels"]
        n = (y != -100).sum().to(torch.float64)
        loss, _ = train_step(model, model.parameters(), opt, None, (x, y, None, None), n, 1, 1.0)
        losses.append(float(loss / n))
        if i == warmup - 1:
            t0, c0 = time.perf_counter(), time.process_time()
    return time.perf_counter() - t0, time.process_time() - c0, losses


def lightning_fit(data: Path, steps: int, warmup: int) -> tuple[float, float, list[float]]:
    pl = _lightning()
    loader, model, opt = make(data, steps)
    stamps: dict[str, float] = {}

    class LM(pl.LightningModule):  # type: ignore[name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.losses: list[float] = []

        def training_step(self, batch: Any, i: int) -> torch.Tensor:
            out = dd_loss(self.model(batch["input_ids"]), batch)
            self.losses.append(float(out.mean))
            return out.loss

        def configure_optimizers(self) -> Any:
            return opt

        def on_train_batch_end(self, outputs: Any, batch: Any, i: int) -> None:
            if i == warmup - 1:
                stamps["t0"], stamps["c0"] = time.perf_counter(), time.process_time()
            stamps["t1"], stamps["c1"] = time.perf_counter(), time.process_time()

    lm = LM()
    trainer = pl.Trainer(
        accelerator="cpu", devices=1, max_steps=steps, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        gradient_clip_val=1.0,
    )  # fmt: skip
    trainer.fit(lm, datamodule=datamodule_class()(loader))
    return stamps["t1"] - stamps["t0"], stamps["c1"] - stamps["c0"], lm.losses


def resume_times(data: Path, at: int, repeats: int) -> dict[str, float]:
    def fresh() -> VSLLoader:
        return VSLLoader(open_dataset(data), tokens_per_step=65536, total_tokens=1100 * 65536)

    ref = fresh()
    it = iter(ref)
    for _ in range(at):
        next(it)
    state, want = ref.state_dict(), next(it)
    restore, skip = [], []
    for _ in range(repeats):
        a = fresh()  # the plan is built in both cases; only what follows is timed
        t = time.perf_counter()
        a.load_state_dict(state)
        got = next(iter(a))
        restore.append(time.perf_counter() - t)
        assert torch.equal(got["input_ids"], want["input_ids"])
        b = fresh()
        t = time.perf_counter()
        itb = iter(b)
        for _ in range(at):
            next(itb)
        got = next(itb)
        skip.append(time.perf_counter() - t)
        assert torch.equal(got["input_ids"], want["input_ids"])
    return {"restore_s": statistics.median(restore), "skip_s": statistics.median(skip)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    a = ap.parse_args()
    torch.set_num_threads(1)
    hw = hardware()
    with tempfile.TemporaryDirectory() as tmp:
        small = corpus(Path(tmp) / "small", 2_000_000, 256)
        big = corpus(Path(tmp) / "big", 8_000_000, 8192)
        own, lit, own_cpu, lit_cpu = [], [], [], []
        for r in range(a.repeats):
            t_own, c_own, l_own = own_loop(small, a.steps, a.warmup)
            t_lit, c_lit, l_lit = lightning_fit(small, a.steps, a.warmup)
            own.append(t_own)
            lit.append(t_lit)
            own_cpu.append(c_own)
            lit_cpu.append(c_lit)
            same = np.allclose(l_own, l_lit, rtol=1e-4)
            print(f"repeat {r}: own {t_own:.3f} s (cpu {c_own:.3f}), lightning {t_lit:.3f} s "
                  f"(cpu {c_lit:.3f}), same losses: {same}", flush=True)  # fmt: skip
        resume = resume_times(big, 1000, a.repeats)
    n = a.steps - a.warmup
    res = {
        "hardware": hw, "steps_timed": n, "tokens_per_step": TPS,
        "own_ms_per_step": 1e3 * statistics.median(own) / n,
        "lightning_ms_per_step": 1e3 * statistics.median(lit) / n,
        "own_cpu_ms_per_step": 1e3 * statistics.median(own_cpu) / n,
        "lightning_cpu_ms_per_step": 1e3 * statistics.median(lit_cpu) / n,
        "own_all_s": own, "lightning_all_s": lit, "same_losses": bool(same),
        "resume_at_1000": resume,
    }  # fmt: skip
    res["overhead_pct"] = 100 * (res["lightning_ms_per_step"] / res["own_ms_per_step"] - 1)
    res["overhead_cpu_pct"] = 100 * (
        res["lightning_cpu_ms_per_step"] / res["own_cpu_ms_per_step"] - 1
    )
    print(json.dumps(res, indent=1))
    day = datetime.date.today().isoformat()
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / f"adapter_lightning_cpu-{hw['cores']}core_{day}.json").write_text(json.dumps(res))


if __name__ == "__main__":
    main()
