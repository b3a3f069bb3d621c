"""Training checkpoints: written atomically, found again by ``--resume``.

Layout inside a run directory::

    RUN/checkpoints/step_0000200.pt   torch.save of one dict (see :func:`save_checkpoint`)
    RUN/checkpoints/latest.json       {"step": 200, "path": "step_0000200.pt"}, written last

A checkpoint file is written to a temporary name in the same directory and renamed into place, and
``latest.json`` is replaced only after that, so a job killed at any moment leaves the previous
checkpoint usable. The ``keep`` most recent checkpoints are kept (default 2: the newest could be on
a failing disk); older ones are deleted after the new one is in place.

What a checkpoint holds (the trainer fills it): model and optimizer state, the LR scheduler's
state, the loader's ``state_dict()`` (a few JSON numbers: epoch, step, seed, fingerprint...), the
RNG states of every rank (python, numpy, torch CPU and CUDA), the step, tokens and elapsed training
seconds, and the run's config for a mismatch check.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ddecomp.errors import UserError
from ddecomp.io import atomic_file, read_json, write_json_atomic

CKPT_DIR = "checkpoints"
LATEST = "latest.json"


def rng_state() -> dict[str, Any]:
    """This process's RNG states (python, numpy's legacy global, torch CPU, every CUDA device)."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),  # noqa: NPY002 - saved so third-party users of it resume too
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])  # noqa: NPY002
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(run_dir: Path, step: int, state: dict[str, Any], keep: int = 2) -> Path:
    """Write ``state`` as the checkpoint of ``step`` atomically; prune to the ``keep`` newest."""
    assert keep >= 1
    ckdir = Path(run_dir) / CKPT_DIR
    ckdir.mkdir(parents=True, exist_ok=True)
    name = f"step_{step:07d}.pt"
    with atomic_file(ckdir / name) as f:
        torch.save(state, f)
    write_json_atomic(ckdir / LATEST, {"step": step, "path": name})
    for old in sorted(ckdir.glob("step_*.pt"))[:-keep]:
        if old.name != name:
            old.unlink()
    return ckdir / name


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint ``latest.json`` names, or None when the run has none."""
    ptr = Path(run_dir) / CKPT_DIR / LATEST
    if not ptr.is_file():
        return None
    rec = read_json(ptr)
    path = ptr.parent / rec["path"]
    if not path.is_file():
        raise UserError(
            f"{ptr} names {rec['path']}, which is missing; delete {ptr} to resume from an "
            "older checkpoint or start a new run"
        )
    return path


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint onto the CPU (the trainer moves tensors where they belong)."""
    try:
        state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=False)
    except (OSError, RuntimeError, EOFError) as e:
        raise UserError(f"{path}: unreadable checkpoint ({e}); resume from another one") from e
    return state
