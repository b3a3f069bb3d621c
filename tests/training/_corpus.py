"""Shared by the trainer, evaluation and compare tests: a small learnable corpus and its config."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from ddecomp.training.config import TrainConfig

EOS = 63
TPS = 1024  # tokens per step: a multiple of max_len 128 x 2 ranks


def learnable_tokens(n_tokens: int, seed: int = 0) -> np.ndarray:
    """Documents of log-normal length whose tokens follow ``t_i = t_{i-1} + step (mod 60)`` with a
    per-document step and 10% noise: learnable, and better predicted with more context."""
    rng = np.random.default_rng(seed)
    docs, n = [], 0
    while n < n_tokens:
        L = int(np.clip(rng.lognormal(np.log(120), 0.9), 4, 1000))
        d = (int(rng.integers(0, 60)) + int(rng.integers(1, 7)) * np.arange(L)) % 60
        noise = rng.random(L) < 0.1
        d[noise] = rng.integers(0, 60, int(noise.sum()))
        docs.append(np.append(d, EOS).astype(np.uint16))
        n += L + 1
    return np.concatenate(docs)


def make_dataset(
    root: Path, n_tokens: int = 120_000, val_fraction: float = 0.05, seed: int = 0
) -> Path:
    from ddecomp.preparing.pipeline import TokensConfig, prepare_tokens

    cfg = TokensConfig(
        learnable_tokens(n_tokens, seed), root, eos_id=EOS, min_len=16, max_len=128,
        val_fraction=val_fraction, vocab_size=64,
    )  # fmt: skip
    prepare_tokens(cfg)
    return root


def cfg_for(data: Path | tuple[str, ...], out: Path, **kw: object) -> TrainConfig:
    base = TrainConfig(
        data=data if isinstance(data, tuple) else str(data), out=str(out), tokens=16 * TPS,
        tokens_per_step=TPS, warmup=3, device="cpu", progress=False, eval_tokens=512,
        deterministic=True,
    )  # fmt: skip
    return replace(base, **kw)  # type: ignore[arg-type]
