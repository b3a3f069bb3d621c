"""Megatron indexed datasets written by megatron-core's own ``IndexedDatasetBuilder``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


def write_megatron(prefix: Path, docs: list[list[np.ndarray]], dtype: type) -> Path:
    """``prefix.bin`` + ``prefix.idx``: each document is a list of sequences (possibly none)."""
    torch = pytest.importorskip("torch")
    mod = pytest.importorskip("megatron.core.datasets.indexed_dataset")
    builder = mod.IndexedDatasetBuilder(f"{prefix}.bin", dtype=dtype)
    for doc in docs:
        for seq in doc:
            builder.add_item(torch.from_numpy(np.asarray(seq, dtype=np.int64)))
        builder.end_document()
    builder.finalize(f"{prefix}.idx")
    return prefix


def random_docs(
    n: int, seed: int, eos: int, hi: int, ends_with_eos: float = 0.5, empty: float = 0.05
) -> list[list[np.ndarray]]:
    """Documents of 1-4 sequences of random ids in ``[10, hi)``; some end with ``eos``, some are
    empty (no sequence, or one of length 0)."""
    rng = np.random.default_rng(seed)
    docs: list[list[np.ndarray]] = []
    for _ in range(n):
        if rng.random() < empty:
            docs.append([] if rng.random() < 0.5 else [np.zeros(0, dtype=np.int64)])
            continue
        seqs = [
            rng.integers(10, hi, size=int(rng.integers(1, 400))) for _ in range(rng.integers(1, 5))
        ]
        if rng.random() < ends_with_eos:
            seqs[-1] = np.append(seqs[-1], eos)
        docs.append(seqs)
    return docs


def flat_with_eos(docs: list[list[np.ndarray]], eos: int) -> np.ndarray:
    """The same documents as one flat token array with EOS after each that lacks it."""
    out: list[np.ndarray] = []
    for doc in docs:
        toks = np.concatenate(doc) if doc else np.zeros(0, dtype=np.int64)
        out.append(toks)
        if toks.size == 0 or toks[-1] != eos:
            out.append(np.array([eos]))
    return np.concatenate(out).astype(np.int64)
