"""Training checkpoints: written atomically, recorded by sha256, loaded without running code.

Layout inside a run directory::

    RUN/checkpoints/step_0000200.pt   torch.save of one dict (see :func:`save_checkpoint`)
    RUN/checkpoints/latest.json       {"step": 200, "path": "step_0000200.pt", "bytes": ...,
                                       "sha256": ...}, written last

A checkpoint file is written to a temporary name in the same directory and renamed into place, and
``latest.json`` is replaced only after that, so a job killed at any moment leaves the previous
checkpoint usable. The ``keep`` most recent checkpoints are kept (default 2: the newest could be on
a failing disk); older ones are deleted after the new one is in place, by their exact names
(``step_`` + 7 or more digits + ``.pt``): any other file in the directory is the user's.

What a checkpoint holds (the trainer fills it): model and optimizer state, the LR scheduler's
state, the RNG states of every rank (python, numpy, torch CPU and CUDA, as tensors and numbers),
and one JSON string ``meta``: the loader's ``state_dict()``, the step, elapsed training seconds,
the dataset fingerprint and the run's config for a mismatch check.

Trust: a checkpoint is data, never code. ``--resume`` reads only the file ``latest.json`` names by
a plain ``step_N.pt`` name inside ``RUN/checkpoints/`` (a symlink that leaves it is refused),
checks its size and sha256 against the record written with it (flipped bytes on disk are a
:class:`DataError`, not a silently worse run), refuses anything but torch's zip format, and
unpickles with ``weights_only=True``: tensors, containers and numbers only, so a file whose pickle
calls ``os.system`` is refused before any call. Hashing costs one extra read of the file on
resume (sha256 ~1.4 GB/s); on save it runs over the bytes as torch writes them, no second read.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import random
import re
import signal
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import numpy as np
import torch

from ddecomp.errors import DataError, UserError
from ddecomp.io import SHA256_HEX, atomic_file, parse_json, sha256_file, write_json_atomic

CKPT_DIR = "checkpoints"
LATEST = "latest.json"
FORMAT = 2  # 1: the pickled dicts of before (RNG states as numpy objects), refused on load
_NAME = re.compile(r"step_[0-9]+\.pt")
_OWN_NAME = re.compile(r"step_([0-9]{7,})\.pt")  # the names save_checkpoint writes, and prunes
_STATE_PARTS = ("model", "optimizer", "scheduler", "rng")  # tensors in torch's own containers
_META: dict[str, type | tuple[type, ...]] = {  # the JSON parts and their types
    "step": int,
    "elapsed_s": (int, float),
    "config": dict,
    "fingerprint": str,
    "loader": dict,
}
_RNG = {"python": (625,), "numpy": (624,), "torch": None}


@dataclass(frozen=True)
class CheckpointRecord:
    """What ``latest.json`` says of the newest checkpoint: where it is, what it must hash to."""

    path: Path
    step: int
    nbytes: int
    sha256: str


def rng_state() -> dict[str, Any]:
    """This process's RNG states as tensors and numbers (python, numpy's legacy global, torch CPU,
    every CUDA device), so a checkpoint loads with ``weights_only=True``."""
    version, words, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002 - third-party users
    assert kind == "MT19937"
    state: dict[str, Any] = {
        "python": torch.tensor(words, dtype=torch.int64),
        "python_version": version,
        "python_gauss": gauss,
        "numpy": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
        "numpy_pos": int(pos),
        "numpy_gauss": [int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    words = tuple(int(w) for w in state["python"].tolist())
    random.setstate((state["python_version"], words, state["python_gauss"]))
    keys = state["numpy"].numpy().astype(np.uint32)
    has_gauss, cached = state["numpy_gauss"]
    np.random.set_state(("MT19937", keys, state["numpy_pos"], has_gauss, cached))  # noqa: NPY002
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Stateful(Protocol):
    def load_state_dict(self, state: Any, /) -> Any: ...


def restore(
    path: Path, state: dict[str, Any], parts: dict[str, Stateful], rng: dict[str, Any]
) -> None:
    """Load each part's state and the RNG states; a checkpoint that does not fit this run
    (another model's shapes, missing keys, an impossible RNG or loader state, even with a
    valid sha256) is one line, not the traceback the part's own loader raises."""
    part = "rng"
    try:
        for part, obj in parts.items():
            obj.load_state_dict(state[part])
        part = "rng"
        set_rng_state(rng)
    except UserError as e:  # the loader's own check of its state
        raise UserError(f"{path}: {e}") from e
    except (RuntimeError, ValueError, TypeError, KeyError, IndexError, AttributeError) as e:
        raise UserError(
            f"{path}: its {part} state does not fit this run ({type(e).__name__}: "
            f"{_first_line(e)}); resume from a checkpoint this run wrote, or start a new run "
            "with another --out"
        ) from e


class _HashingWriter:
    """A write-only file that hashes the bytes torch.save writes through it."""

    def __init__(self, f: BinaryIO) -> None:
        self.f, self.h, self.nbytes = f, hashlib.sha256(), 0

    def write(self, b: Any) -> int:
        mv = memoryview(b).cast("B")
        self.h.update(mv)
        self.nbytes += mv.nbytes
        return self.f.write(mv)

    def flush(self) -> None:
        self.f.flush()


def save_checkpoint(run_dir: Path, step: int, state: dict[str, Any], keep: int = 2) -> Path:
    """Write ``state`` as the checkpoint of ``step`` atomically; prune to the ``keep`` newest.

    ``state`` holds the tensor parts (model, optimizer, scheduler, rng) and the JSON parts (step,
    elapsed_s, config, fingerprint, loader); the latter must be JSON-serialisable (checked here,
    at save time, rather than found out at resume).
    """
    assert keep >= 1
    assert set(state) == {*_STATE_PARTS, *_META}, sorted(state)
    payload = {
        "format": FORMAT,
        **{k: state[k] for k in _STATE_PARTS},
        "meta": json.dumps({k: state[k] for k in _META}, allow_nan=False),
    }
    ckdir = Path(run_dir) / CKPT_DIR
    name = f"step_{step:07d}.pt"
    try:
        ckdir.mkdir(parents=True, exist_ok=True)
        with atomic_file(ckdir / name) as f:
            w = _HashingWriter(f)
            torch.save(payload, w)  # type: ignore[arg-type]  # a file-like with write()
        rec = {"step": step, "path": name, "bytes": w.nbytes, "sha256": w.h.hexdigest()}
        write_json_atomic(ckdir / LATEST, rec)
        prune(ckdir, keep, name)
    except (OSError, RuntimeError) as e:  # torch.save raises RuntimeError on a failed write
        why = e.strerror if isinstance(e, OSError) and e.strerror else _first_line(e)
        raise UserError(
            f"{ckdir}: cannot write the checkpoint of step {step} ({why}); free space "
            "or fix the permissions, then --resume from the previous checkpoint"
        ) from e
    return ckdir / name


def prune(ckdir: Path, keep: int, newest: str) -> None:
    """Delete all but the ``keep`` latest checkpoints ddecomp wrote (``step_<7+ digits>.pt``,
    exactly as :func:`save_checkpoint` names them). A user's ``step_best.pt`` or
    ``step_0000001_backup.pt`` is neither deleted nor counted against ``keep``."""
    own = sorted(
        (int(m[1]), p)
        for p in ckdir.iterdir()
        if (m := _OWN_NAME.fullmatch(p.name)) and p.is_file() and not p.is_symlink()
    )
    for _, old in own[:-keep]:
        if old.name != newest:
            old.unlink()


def _bad_latest(ptr: Path, problem: str) -> UserError:
    return UserError(
        f"{ptr}: {problem}; restore it, or start a new run with another --out (--resume reads "
        "only the checkpoint that latest.json records)"
    )


def latest_checkpoint(run_dir: Path) -> CheckpointRecord | None:
    """The record ``latest.json`` holds, checked to name a file inside ``RUN/checkpoints/``; None
    when the run has no ``latest.json``."""
    ckdir = Path(run_dir) / CKPT_DIR
    ptr = ckdir / LATEST
    if not ptr.exists() and not ptr.is_symlink():
        return None
    try:
        if ptr.resolve().parent != ckdir.resolve() or not ptr.is_file():
            raise _bad_latest(ptr, "not a regular file inside the checkpoint directory")
        rec = parse_json(ptr.read_bytes())
    except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise _bad_latest(ptr, f"unreadable ({type(e).__name__}: {_first_line(e)})") from e
    if not isinstance(rec, dict) or not isinstance(rec.get("path"), str):
        raise _bad_latest(ptr, 'expected an object {"step", "path", "bytes", "sha256"}')
    name = rec["path"]
    if not _NAME.fullmatch(name):
        raise _bad_latest(
            ptr, f"names {name!r}; only a plain step_N.pt name inside {ckdir} is read"
        )
    if "sha256" not in rec:
        raise _bad_latest(ptr, "has no sha256 (written before checkpoints were verified)")
    step, nbytes, sha = rec.get("step"), rec.get("bytes"), rec["sha256"]
    digest_ok = isinstance(sha, str) and SHA256_HEX.fullmatch(sha) is not None
    if not (_is_int(step) and _is_int(nbytes) and digest_ok):
        raise _bad_latest(ptr, "step and bytes must be integers, sha256 64 hex digits")
    assert isinstance(step, int)  # for mypy: _is_int checked both
    assert isinstance(nbytes, int)
    path = ckdir / name
    if path.resolve().parent != ckdir.resolve():
        raise _bad_latest(ptr, f"names {name}, a link that leaves {ckdir}")
    if not path.is_file():
        raise _bad_latest(ptr, f"names {name}, which is missing or not a file")
    return CheckpointRecord(path, step, nbytes, sha)


def load_checkpoint(rec: CheckpointRecord) -> dict[str, Any]:
    """Verify a checkpoint against its record and load it onto the CPU, tensors and JSON only.

    Returns one flat dict: the tensor parts and the fields of ``meta``. A file that does not hash
    to its record is a :class:`DataError`; one that is not a ddecomp checkpoint of this format
    (or needs more than tensors to unpickle) a :class:`UserError`; either is one line.
    """
    path = rec.path
    try:
        size, sha = path.stat().st_size, sha256_file(path)
    except OSError as e:
        raise UserError(f"{path}: unreadable checkpoint ({e.strerror or e})") from e
    if size != rec.nbytes or sha != rec.sha256:
        raise DataError(
            f"{path}: {size} bytes with sha256 {sha[:12]}, but {LATEST} recorded {rec.nbytes} "
            f"bytes with sha256 {rec.sha256[:12]} when it was written: the file is damaged; "
            "restore it from a copy or start a new run"
        )
    if not zipfile.is_zipfile(path):  # torch's legacy format would reach a plain unpickler
        raise UserError(f"{path}: not a torch zip checkpoint; refused unread")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        what = re.search(r"GLOBAL (\S+)", str(e))
        raise UserError(
            f"{path}: refused: it needs {what[1] if what else 'an object'} to load, more than "
            "tensors and JSON, and a checkpoint never runs code; resume from a checkpoint "
            "written by this ddecomp"
        ) from e
    except (OSError, RuntimeError, EOFError, ValueError, zipfile.BadZipFile) as e:
        raise UserError(f"{path}: unreadable checkpoint ({_first_line(e)})") from e
    return _unpack(path, rec, state)


def _unpack(path: Path, rec: CheckpointRecord, state: Any) -> dict[str, Any]:
    def bad(problem: str) -> UserError:
        return UserError(
            f"{path}: not a ddecomp checkpoint of format {FORMAT} ({problem}); resume from a "
            "checkpoint written by this ddecomp or start a new run"
        )

    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise bad("no format number" if not isinstance(state, dict) else "another format")
    for k in ("model", "optimizer", "scheduler"):
        if not isinstance(state.get(k), dict):
            raise bad(f"no {k} state")
    rng = state.get("rng")
    if not isinstance(rng, list) or not rng or not all(_rng_ok(r) for r in rng):
        raise bad("no RNG states")
    try:
        meta = parse_json(state.get("meta"))  # type: ignore[arg-type]
    except (TypeError, ValueError) as e:
        raise bad("meta is not JSON") from e
    if not isinstance(meta, dict):
        raise bad("meta is not an object")
    for k, kind in _META.items():
        if not isinstance(meta.get(k), kind) or isinstance(meta.get(k), bool):
            raise bad(f"meta has no {k}")
    if meta["step"] != rec.step:
        raise bad(f"it holds step {meta['step']}, {LATEST} says {rec.step}")
    return {**{k: state[k] for k in _STATE_PARTS}, **meta}


def _rng_ok(r: Any) -> bool:
    if not isinstance(r, dict):
        return False
    for k, shape in _RNG.items():
        t = r.get(k)
        if not isinstance(t, torch.Tensor) or (shape is not None and tuple(t.shape) != shape):
            return False
    gauss = r.get("numpy_gauss")
    return (
        _is_int(r.get("python_version"))
        and _is_int(r.get("numpy_pos"))
        and r["numpy_pos"] <= 624  # numpy takes any position, and reads out of its key array
        and isinstance(gauss, list)
        and len(gauss) == 2
    )


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else type(e).__name__


class DeferredInterrupt:
    """Ctrl-C during the training loop: the step in progress finishes, the loop writes a
    checkpoint (atomically, as any other) and stops, so "rerun with --resume" continues from
    that step. A second Ctrl-C interrupts at once (the previous checkpoint stays usable).

    Armed only in a single-process run on the main thread: under torchrun every rank would
    have to agree on the step (a collective), so there Ctrl-C keeps its default behaviour.
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.hit = False
        self._old: Any = None

    def arm(self) -> None:
        if self.enabled and threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        self.hit = True
        signal.signal(signal.SIGINT, self._old)  # the second Ctrl-C: the default, at once

    def __enter__(self) -> DeferredInterrupt:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._old is not None and signal.getsignal(signal.SIGINT) == self._handle:
            signal.signal(signal.SIGINT, self._old)
        self._old = None
