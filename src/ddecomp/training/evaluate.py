"""Held-out evaluation: what the paper measured, at small scale.

Two measurements on the validation split (documents ``prepare --val-fraction`` held out):

- **loss per context length**: for every bucket length ``L`` from ``min_len`` (256 by default)
  to the maximum, the mean next-token loss over held-out pieces of exactly ``L`` targets. Each
  piece is one contiguous stretch of one document, so the model sees only that document's text
  (the paper's regular evaluations are short-context; its long-context ones need long documents).
- **loss by token position** on the longest held-out pieces, averaged over pieces in power-of-two
  bins of position ``[0, 1), [1, 2), [2, 4), ..., [L/2, L)``: a model that uses long context has a
  falling curve out to the right; the small-scale stand-in for the paper's long-context tasks.

Which pieces are used is a pure function of the dataset and ``EvalConfig.seed``
(:func:`eval_rows`): a seeded choice of at most ``tokens_per_length // L`` rows per length, the
same for every run, method and evaluation of a dataset, so runs are compared on identical text.
Cost: ``tokens_per_length`` tokens of forward passes per length (default 32,768; six lengths
about one training step of 200k tokens). Under several ranks each rank evaluates every
``world``-th row and the sums are all-reduced.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ddecomp.errors import UserError
from ddecomp.loading.concat import segments_to_batch
from ddecomp.loading.protocols import IGNORE_INDEX, BucketData
from ddecomp.loading.world import World
from ddecomp.training.attention import make_doc_mask
from ddecomp.training.distributed import all_sum
from ddecomp.training.model import GPT, token_losses
from ddecomp.training.sources import SourceEval
from ddecomp.training.step import autocast_for


@dataclass(frozen=True)
class EvalConfig:
    """``tokens_per_length``: held-out tokens per context length (rows = that // L, at least 1);
    ``batch_tokens``: tokens per forward pass; lengths ``min_len..max_len`` (None: dataset max)."""

    tokens_per_length: int = 32768
    batch_tokens: int = 16384
    min_len: int = 256
    max_len: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.tokens_per_length < 1 or self.batch_tokens < 1:
            raise UserError(
                f"eval tokens_per_length={self.tokens_per_length} and batch_tokens="
                f"{self.batch_tokens} must be >= 1"
            )


def eval_lengths(bucket_lengths: list[int], cfg: EvalConfig) -> list[int]:
    """Bucket lengths evaluated: those within ``[min_len, max_len]``; if none reach ``min_len``
    (a dataset of short pieces), all up to ``max_len``."""
    top = cfg.max_len if cfg.max_len is not None else max(bucket_lengths, default=0)
    inside = [L for L in bucket_lengths if L <= top]
    long = [L for L in inside if L >= cfg.min_len]
    return long or inside


def eval_rows(
    bucket_rows: dict[int, int], lengths: list[int], cfg: EvalConfig
) -> dict[int, np.ndarray]:
    """Row indices evaluated per length: a sorted seeded sample (without replacement)."""
    out: dict[int, np.ndarray] = {}
    for L in lengths:
        n_rows = bucket_rows[L]
        k = min(n_rows, max(1, cfg.tokens_per_length // L))
        rng = np.random.default_rng([cfg.seed, L])
        out[L] = np.sort(rng.choice(n_rows, size=k, replace=False)).astype(np.int64)
    return out


def position_edges(L: int) -> list[int]:
    """Power-of-two bin edges ``[0, 1, 2, 4, ..., L]`` over target positions ``0..L-1``."""
    edges = [0, 1]
    while edges[-1] < L:
        edges.append(min(2 * edges[-1], L))
    return edges


@torch.no_grad()
def evaluate(
    model: GPT,
    val: BucketData,
    cfg: EvalConfig,
    device: torch.device,
    world: World | None = None,
) -> dict[str, Any] | None:
    """Evaluate ``model`` on the validation dataset ``val``; None when it has no pieces.

    The rows are ``val``'s of epoch 0 (a blend's held-out rows behind fractional factors are
    the same for every evaluation of a run, so evaluations compare the same text).

    Returns ``{"val_loss": {"256": ..}, "val_tokens": {"256": ..}, "val_loss_mean": ..,
    "position": {"seq_len": L, "edges": [..], "loss": [..]}}`` (lengths as string keys, JSON).
    """
    world = world or World()
    source = val.for_epoch(0)
    lengths = eval_lengths(list(val.bucket_lengths), cfg)
    if not lengths:
        return None
    rows = eval_rows(dict(val.bucket_rows), lengths, cfg)
    was_training = model.training
    model.eval()
    longest = lengths[-1]
    val_loss: dict[str, float] = {}
    val_tokens: dict[str, int] = {}
    pos_sum = torch.zeros(longest, dtype=torch.float64, device=device)
    by_source = SourceEval.for_data(val, lengths, device)  # a blend: loss per source and length
    for L in lengths:
        mine = rows[L][world.rank :: world.world_size]
        bsz = max(1, cfg.batch_tokens // L)
        total = torch.zeros(2, dtype=torch.float64, device=device)  # loss sum, target count
        for i in range(0, len(mine), bsz):
            idx = mine[i : i + bsz]
            buf = np.empty((idx.size, L + 1), dtype=np.int64)
            packed = source.fill(L, idx, buf)  # tail rows (--tails pack): masked per piece
            batch = torch.from_numpy(buf).to(device)
            pos, mask, labels = None, None, batch[:, 1:]
            if packed is not None:
                seg = segments_to_batch(packed.segments, L)
                mask = make_doc_mask(seg["cu_seqlens"], idx.size, L, device)
                pos = seg["position_ids"].to(device)
                labels = torch.from_numpy(packed.labels).to(device)
            with autocast_for(device):
                logits = model(batch[:, :-1], pos, mask)
            tl = token_losses(logits, labels).double()  # [b, L]
            total[0] += tl.sum()
            total[1] += int((labels != IGNORE_INDEX).sum())
            if by_source is not None:
                by_source.add(L, idx, tl, labels)
            if L == longest:
                pos_sum += tl.sum(dim=0)
        all_sum(total, world)
        val_loss[str(L)] = float(total[0] / total[1])
        val_tokens[str(L)] = int(total[1])
    all_sum(pos_sum, world)
    edges = position_edges(longest)
    per_pos = pos_sum / len(rows[longest])
    pos_loss = [float(per_pos[a:b].mean()) for a, b in itertools.pairwise(edges)]
    model.train(was_training)
    return {
        "val_loss": val_loss,
        "val_tokens": val_tokens,
        "val_loss_mean": float(np.mean(list(val_loss.values()))),
        "position": {"seq_len": longest, "edges": edges, "loss": pos_loss},
        **({} if by_source is None else by_source.result(world)),
    }
