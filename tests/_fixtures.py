"""Shared test data: token-identity corpora whose every token names its own position."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ddecomp.loading.base import StepLoader

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


_TRUNCATE_IN_USE = """
import os, sys
import numpy as np
from ddecomp import DataError, open_dataset
ds = open_dataset({root!r})
L = ds.bucket_lengths[{bucket}]
n = ds.num_rows(L)
ds.rows(L, np.arange(n))  # every row readable
os.truncate({path!r}, 4096)
try:
    ds.rows(L, np.arange(n))
except DataError as e:
    print("DataError:", e)
    sys.exit(3)
"""


def truncate_while_in_use(root: Path, path: Path, bucket: int) -> str:
    """Open ``root`` in a fresh process, read every row of ``bucket_lengths[bucket]``, truncate
    the in-place token file ``path`` to 4096 bytes, read again; the one line the second read
    raised (the process exits 3 with it; a SIGBUS would be -7 and fail here)."""
    script = _TRUNCATE_IN_USE.format(root=str(root), path=str(path), bucket=bucket)
    r = run_python("-c", script)
    assert r.returncode == 3, (r.returncode, r.stderr[-2000:])
    return r.stdout.strip()


def assert_batches_equal(got: Mapping[str, Any], want: Mapping[str, Any], where: str = "") -> None:
    """The same keys, and every value equal: tensors in dtype, shape and every element."""
    import torch

    assert set(got) == set(want), f"{where}: keys {sorted(got)} != {sorted(want)}"
    for key, w in want.items():
        g = got[key]
        if isinstance(w, torch.Tensor):
            assert isinstance(g, torch.Tensor), f"{where}: {key} is a {type(g).__name__}"
            assert g.dtype == w.dtype, f"{where}: {key} is {g.dtype}, want {w.dtype}"
            assert g.shape == w.shape, f"{where}: {key} has shape {g.shape}, want {w.shape}"
            assert torch.equal(g, w), f"{where}: {key} differs"
        else:
            assert g == w, f"{where}: {key} is {g!r}, want {w!r}"


def assert_resume_equivalent(
    make_loader: Callable[[], StepLoader], epoch: int = 0, min_steps: int = 3
) -> int:
    """A loader restored at EVERY step of ``epoch`` serves exactly the uninterrupted run's
    remaining batches (every key compared, not only ``input_ids``).

    Also: every state survives JSON, has the same keys in the same order at every step, and
    ``load_state_dict(state_dict())`` round-trips on the restored loader. ``make_loader`` builds
    a fresh loader (same arguments each call). Returns the number of steps checked, at least
    ``min_steps`` (a vacuity guard: an empty epoch would prove nothing).
    """
    ref_loader = make_loader()
    ref_loader.set_epoch(epoch)
    states = [json.loads(json.dumps(ref_loader.state_dict()))]
    ref = []
    for batch in ref_loader:
        ref.append(batch)
        states.append(json.loads(json.dumps(ref_loader.state_dict())))
    n = len(ref)
    assert n >= min_steps, f"only {n} steps in epoch {epoch}: the check would be vacuous"
    assert [b["step"] for b in ref] == list(range(n))
    assert all(b["epoch"] == epoch for b in ref)
    keys = list(states[0])
    for k, state in enumerate(states):
        assert list(state) == keys, f"state keys changed at step {k}: {list(state)} != {keys}"
        assert (state["epoch"], state["step"]) == (epoch, k)
        loader = make_loader()
        loader.load_state_dict(state)
        assert loader.state_dict() == state, f"step {k}: the state does not round-trip"
        loader.load_state_dict(loader.state_dict())
        assert loader.state_dict() == state
        if k == n:  # restored at the end of the epoch: the next iteration is the next epoch
            assert (loader.epoch, loader.step, len(loader)) == (epoch, n, n)
            continue
        rest = list(loader)
        assert len(rest) == n - k, f"restored at step {k}: {len(rest)} batches, want {n - k}"
        for got, want in zip(rest, ref[k:], strict=True):
            assert_batches_equal(got, want, f"restored at step {k}, step {want['step']}")
    return n


def run_torchrun(*args: str, nproc: int = 2) -> subprocess.CompletedProcess[str]:
    """``torchrun --nproc-per-node nproc *args`` (rendezvous on a free 127.0.0.1 port, one thread
    per process) through :func:`run_python`."""
    return run_python(
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        str(nproc),
        "--master-port",
        str(free_port()),
        *args,
        env={"OMP_NUM_THREADS": "1"},
    )
