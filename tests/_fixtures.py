"""Shared test data: token-identity corpora whose every token names its own position."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

SRC = Path(__file__).resolve().parents[1] / "src"
EOS = 2**31 - 1  # never a position id, so every non-EOS token identifies its stream position


def identity_tokens(lengths: Sequence[int] | np.ndarray, eos: int = EOS) -> np.ndarray:
    """Documents of ``lengths`` tokens (EOS last); token = its position in the stream."""
    lens = np.asarray(lengths, dtype=np.int64)
    toks = np.arange(int(lens.sum()), dtype=np.uint32)
    toks[np.cumsum(lens) - 1] = eos
    return toks


def random_lengths(n_docs: int, seed: int, lo: int = 1, hi: int = 3000) -> np.ndarray:
    """Log-uniform document lengths in tokens, EOS included."""
    rng = np.random.default_rng(seed)
    return np.exp(rng.uniform(np.log(lo), np.log(hi), size=n_docs)).astype(np.int64).clip(lo)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for gloo rendezvous in tests)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_python(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python *args`` in a fresh process that imports this checkout's ``src``; output captured,
    the exit code left to the caller (``env`` entries are added to this process's environment)."""
    e = {**os.environ, "PYTHONPATH": str(SRC), **(env or {})}
    cmd = [sys.executable, *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=e, timeout=300, check=False)
