"""Checkpoints whose sha256 matches their record but whose contents do not fit the run (issue 22).

A forged or foreign checkpoint passes the hash check (its record was written with it): wrong
tensor shapes, missing keys, an impossible RNG state or loader state must each be one line and
exit code 2 on ``--resume``, never a traceback.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from .test_checkpoint_faults import CKPT, base_run, data, one_line, point_latest, resume, run

__all__ = ["base_run", "data", "run"]  # fixtures, used by name


def _model(s: dict[str, Any]) -> None:
    k = next(iter(s["model"]))
    del s["model"][k]


def _shape(s: dict[str, Any]) -> None:
    k = next(iter(s["model"]))
    s["model"][k] = torch.zeros(3, 5)


def _optimizer(s: dict[str, Any]) -> None:
    s["optimizer"]["param_groups"] = []


def _rng_torch(s: dict[str, Any]) -> None:
    s["rng"][0]["torch"] = torch.zeros(7, dtype=torch.uint8)


def _rng_python(s: dict[str, Any]) -> None:
    s["rng"][0]["python_version"] = 99


def _rng_numpy(s: dict[str, Any]) -> None:
    s["rng"][0]["numpy_pos"] = 10_000


def _loader(s: dict[str, Any]) -> None:
    meta = json.loads(s["meta"])
    meta["loader"] = {"epoch": "x"}
    s["meta"] = json.dumps(meta)


def _scheduler(s: dict[str, Any]) -> None:
    s["scheduler"] = {"nonsense": 1}


FORGERIES: dict[str, Callable[[dict[str, Any]], None]] = {
    "missing model key": _model,
    "wrong tensor shape": _shape,
    "optimizer groups": _optimizer,
    "torch rng state": _rng_torch,
    "python rng version": _rng_python,
    "numpy rng position": _rng_numpy,
    "loader state": _loader,
    "scheduler state": _scheduler,
}


@pytest.mark.parametrize("forgery", list(FORGERIES))
def test_a_forged_checkpoint_with_a_valid_hash_is_one_line(
    data: Path, run: Path, forgery: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = run / "checkpoints" / CKPT
    state = torch.load(path, map_location="cpu", weights_only=True)
    FORGERIES[forgery](state)
    torch.save(state, path)
    point_latest(run, CKPT)  # the record matches the forged file
    code, err = resume(data, run, capsys)
    assert code == 2, err
    line = one_line(err)
    assert CKPT in line
