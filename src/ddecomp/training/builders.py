"""The pieces :func:`ddecomp.training.loop.train` assembles: loader per method, AdamW, LR schedule.

- Loader: the same objects users put in their own loops (``examples/plain_loop.py``). All four
  methods get ``tokens_per_step`` global tokens per step and this process's rank / world size;
  DD's plan covers the run (``total_tokens = tokens``), the baselines go pass after pass.
- AdamW (betas 0.9 / 0.95, eps 1e-8; fused on CUDA), weight decay on matrices only (norm gains
  are not decayed: decay would pull them towards 0, not towards their identity value 1).
- Schedule: linear warmup from ``lr / warmup`` to ``lr`` over ``warmup`` steps, then one cosine
  from ``lr`` down to ``min_lr_ratio * lr`` at the last step; over the whole run, never per cycle.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from ddecomp.training.attention import check_dense_stream, make_doc_mask, make_flat_mask
from ddecomp.training.microbatch import row_slices
from ddecomp.training.step import autocast_for

if TYPE_CHECKING:
    from ddecomp.loading.base import StepLoader
    from ddecomp.loading.protocols import TrainData
    from ddecomp.loading.world import World
    from ddecomp.training.config import TrainConfig


def build_loader(cfg: TrainConfig, ds: TrainData, max_len: int, world: World) -> StepLoader:
    """The loader of ``cfg.method`` over ``ds`` for this rank, with ``cfg.num_workers`` workers
    (see the table in ddecomp.training.loop)."""
    world = world.with_workers(cfg.num_workers)
    tps, seed = cfg.tokens_per_step, cfg.seed
    if cfg.method == "dd":
        from ddecomp.loading.rebucket import rebucket
        from ddecomp.loading.vsl import VSLLoader

        # A --max-len below the dataset's splits the longer rows into rows of max_len (one
        # token of overlap, every target kept once); nothing is dropped. The plan is the run: its
        # steps are cfg.steps, so the curriculum's cycles and the cosine schedule end together
        # (docs/method.md section 3.5).
        return VSLLoader(
            rebucket(ds, max_len),
            tokens_per_step=tps,
            curriculum=cfg.curriculum,
            cycles=cfg.cycles,
            seed=seed,
            world=world,
            mode=cfg.mode,
            total_tokens=cfg.tokens,
            layout=cfg.layout,
        )
    if cfg.method == "pack":
        from ddecomp.loading.pack import PackedLoader

        return PackedLoader(
            ds, seq_len=max_len, tokens_per_step=tps, seed=seed, world=world, layout=cfg.layout
        )
    from ddecomp.loading.concat import ConcatChunkLoader

    return ConcatChunkLoader(
        ds,
        seq_len=max_len,
        tokens_per_step=tps,
        doc_mask=cfg.method == "concat-dm",
        seed=seed,
        world=world,
        layout=cfg.layout,
    )


def check_flat_fits(cfg: TrainConfig, world: World, device: torch.device) -> None:
    """A compiled flat run on the CPU masks each micro-batch with a dense ``[T, T]`` matrix:
    refuse one too large now, in one line, before any data is read."""
    if cfg.layout == "flat" and cfg.compile and device.type != "cuda":
        per_rank = cfg.tokens_per_step // world.world_size
        check_dense_stream(min(per_rank, cfg.micro_batch_tokens or per_rank))


def build_optimizer(
    model: torch.nn.Module, cfg: TrainConfig, device: torch.device
) -> torch.optim.AdamW:
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(
        groups, lr=cfg.lr, betas=(0.9, 0.95), eps=1e-8, fused=device.type == "cuda"
    )


def cosine_schedule(warmup: int, total: int, min_ratio: float) -> Callable[[int], float]:
    """LR multiplier for step ``s`` (0-based): warmup ``(s + 1) / warmup``, then cosine."""
    assert 0 <= warmup < total, (warmup, total)

    def factor(s: int) -> float:
        if s < warmup:
            return (s + 1) / warmup
        t = min(1.0, (s - warmup) / max(1, total - 1 - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t))

    return factor


def warm_shapes(
    model: torch.nn.Module,
    loader: StepLoader,
    cfg: TrainConfig,
    world: World,
    device: torch.device,
    vocab: int,
    max_len: int,
) -> float:
    """Compile every (batch, length) shape the run will see before the clock starts.

    DD has one shape per bucket with steps (``loader.step_lengths``), the baselines one; a forward
    and backward on random tokens per shape triggers the compilation; the gradients are discarded.
    Inputs are contiguous, as the training loop makes them (a compiled graph guards on strides).
    Doc-masked methods warm with one document per row (the mask's values do not change shapes);
    DD's lengths with tail rows (``masked_lengths``) warm both ways. The flat layout has one
    shape ``[1, tokens per rank]`` (per micro-batch width), masked: one graph for the whole run.
    """
    import torch._dynamo

    t = time.perf_counter()
    per_rank = cfg.tokens_per_step // world.world_size
    lengths = loader.step_lengths
    assert cfg.method == "dd" or lengths == (max_len,), (cfg.method, lengths, max_len)
    dyn = torch._dynamo.config
    dyn.cache_size_limit = max(dyn.cache_size_limit, 2 * len(lengths) + 4)
    g = torch.Generator().manual_seed(cfg.seed)
    masked = set(loader.masked_lengths)  # DD's tail rows (--tails pack)
    # micro-batches: one shape per distinct slice height (a shorter last slice is another shape)
    shapes = sorted(
        {
            (r.stop - r.start, L)
            for L in lengths
            for r in row_slices(per_rank // L, L, cfg.micro_batch_tokens)
        }
    )
    dyn.cache_size_limit = max(dyn.cache_size_limit, 2 * len(shapes) + 4)
    if cfg.layout == "flat":  # [1, B * L] streams: one shape per distinct width, not per length
        for W in sorted({B * L for B, L in shapes}):
            x = torch.randint(0, vocab, (1, W), generator=g).to(device)
            cu = torch.tensor([0, W], dtype=torch.int32)  # the mask's values change no shape
            stream_mask = make_flat_mask(cu, W, W, device, compiled=True)
            stream_pos = torch.arange(W, device=device)[None]
            with autocast_for(device):
                model(x, stream_pos, stream_mask).float().mean().backward()
        shapes = []
    for B, L in shapes:
        x = torch.randint(0, vocab, (B, L), generator=g).to(device)
        for doc_masked in {cfg.doc_masked, L in masked}:
            mask, pos = None, None
            if doc_masked:
                cu = torch.arange(0, B * L + 1, L, dtype=torch.int32)
                mask = make_doc_mask(cu, B, L, device)
                pos = torch.arange(L, device=device).repeat(B, 1)
            with autocast_for(device):
                model(x, pos, mask).float().mean().backward()
    for p in model.parameters():
        p.grad = None
    return time.perf_counter() - t
