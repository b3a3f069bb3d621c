"""Dataset Decomposition in your own training loop: a plain PyTorch loop over ``VSLLoader``.

    python -m ddecomp prepare --out data --val-fraction 0.02      # once
    python examples/plain_loop.py data --steps 200
    torchrun --nproc-per-node 2 examples/plain_loop.py data      # DDP: same code
    python examples/plain_loop.py web code --shares 0.7,0.3      # a blend of two datasets

Every step has the same number of tokens (``tokens_per_step``, over all ranks) but its own
sequence length: ``batch["input_ids"]`` is ``[tokens_per_step // (L * world_size), L]`` for the
step's bucket ``L``. Rows are single pieces of single documents, so plain causal attention is
exact (no document mask, no position ids). Use one learning-rate schedule over all steps (not per
curriculum cycle). Save ``loader.state_dict()`` with your checkpoint to resume at the next batch.
This file uses the library's GPT for brevity; any ``[B, L] -> [B, L, vocab]`` model works.
"""

from __future__ import annotations

import argparse
import math
import os

import torch
import torch.distributed as dist
import torch.nn.functional as F

import ddecomp
from ddecomp.data.blend import open_sources
from ddecomp.training.model import GPT, model_config


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("data", nargs="+", help="prepared dataset directories; several are blended")
    ap.add_argument("--shares", help="blend: comma-separated token shares (default: each DIR once)")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--tokens-per-step", type=int, default=16384)
    ap.add_argument("--lr", type=float, default=3e-3)
    args = ap.parse_args()

    if "WORLD_SIZE" in os.environ:  # launched by torchrun
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    # one directory: that dataset; several: a ddecomp.Blend (token shares, or each used once)
    shares = [float(s) for s in args.shares.split(",")] if args.shares else None
    ds = open_sources(args.data, shares=shares)
    if not dist.is_initialized() or dist.get_rank() == 0:
        print(ds)
    # rank / world size come from torch.distributed when it is initialized; total_tokens plans the
    # whole run (the curriculum's 8 cycles end with the LR schedule), repeating rows only after a
    # full pass over their bucket
    loader = ddecomp.VSLLoader(
        ds,
        tokens_per_step=args.tokens_per_step,
        curriculum="grow-p2",
        cycles=8,
        total_tokens=args.steps * args.tokens_per_step,
    )
    assert len(loader) == args.steps
    torch.manual_seed(0)
    model: torch.nn.Module = GPT(model_config("tiny", ds.vocab_size)).to(device)
    if dist.is_initialized():
        model = torch.nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1)
    warmup = max(1, args.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: min((s + 1) / warmup, 0.5 * (1 + math.cos(math.pi * s / args.steps))),
    )

    step = 0
    for batch in loader:  # the whole run
        x = batch["input_ids"].to(device)
        y = batch["labels"].to(device)
        logits = model(x)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        if step % 10 == 0 and (not dist.is_initialized() or dist.get_rank() == 0):
            print(f"step {step} len {batch['seq_len']} rows {x.shape[0]} loss {loss.item():.3f}")
        if step == args.steps:
            break
    state = {"model": model.state_dict(), "loader": loader.state_dict()}  # resume from here
    if not dist.is_initialized() or dist.get_rank() == 0:
        print(
            f"done: {step} steps; loader state {state['loader']['epoch']}:{state['loader']['step']}"
        )
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
