"""Shared pieces of the benchmark scripts: synthetic corpora, hardware facts, page-cache warmup."""

from __future__ import annotations

import datetime
import os
import platform
import sys
from pathlib import Path
from typing import Any

import numpy as np

EOS = 50256  # GPT-2's <|endoftext|>: the synthetic corpora look like GPT-2 token files


def synth_tokens(n_tokens: int, mean_doc: float, sigma: float, seed: int) -> np.ndarray:
    """Random uint16 tokens, documents of log-normal length (mean ``mean_doc``), EOS-terminated."""
    rng = np.random.default_rng(seed)
    mu = np.log(mean_doc) - sigma**2 / 2
    lens = np.maximum(2, rng.lognormal(mu, sigma, size=int(2 * n_tokens / mean_doc) + 10))
    lens = lens.astype(np.int64)
    ends = np.cumsum(lens)
    lens = lens[: int(np.searchsorted(ends, n_tokens)) + 1]
    toks = rng.integers(0, EOS, size=int(lens.sum()), dtype=np.uint16)
    toks[np.cumsum(lens) - 1] = EOS
    return toks


def hardware() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "date": datetime.date.today().isoformat(),
    }
    if "torch" in sys.modules:
        info["torch"] = sys.modules["torch"].__version__
    return info


def warm(root: Path) -> None:
    """Read every file under ``root`` once so timings are from page cache."""
    for p in sorted(root.rglob("*")):
        if p.is_file():
            with open(p, "rb") as f:
                while f.read(1 << 24):
                    pass
