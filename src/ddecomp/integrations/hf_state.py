"""The loader state inside a Trainer checkpoint: ``checkpoint-N/ddecomp_loader_state.json``.

A few hundred bytes of JSON: ``{"format", "version", "global_step", "loader": <the loader's
state_dict>}``, the loader's state counting *global* steps (any world size whose batch divides
resumes it). :func:`write_loader_state` writes it atomically (temp file + rename, fsynced)
*before* the Trainer writes ``trainer_state.json``, the file HF resumes from, so a checkpoint HF
can resume always holds its loader state. :func:`read_checkpoint` reads both files as data only
(a regular file, at most 1 MiB, UTF-8 JSON of bounded depth, every field typed) and refuses, in
one line, a checkpoint without the loader state, a state of another format, or a loader state
whose step is not the Trainer's global step (files of two different saves).
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ddecomp.errors import UserError
from ddecomp.io import atomic_file

STATE_NAME = "ddecomp_loader_state.json"
TRAINER_STATE = "trainer_state.json"  # transformers' TRAINER_STATE_NAME
FORMAT, VERSION = "ddecomp-hf-loader-state", 1
MAX_BYTES = 1 << 20


def write_loader_state(ckpt_dir: str | os.PathLike[str], loader_state: Mapping[str, Any],
                       global_step: int) -> Path:  # fmt: skip
    """Write ``loader_state`` into ``ckpt_dir`` (created if missing) atomically."""
    d = Path(ckpt_dir)
    d.mkdir(parents=True, exist_ok=True)
    doc = {"format": FORMAT, "version": VERSION, "global_step": int(global_step),
           "loader": dict(loader_state)}  # fmt: skip
    path = d / STATE_NAME
    with atomic_file(path, fsync=True) as f:
        f.write(json.dumps(doc, indent=1).encode())
    return path


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``, as data only; anything else is one UserError line."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise UserError(f"{path} does not exist") from None
    if not stat.S_ISREG(st.st_mode):
        raise UserError(f"{path} is not a regular file")
    if st.st_size > MAX_BYTES:
        raise UserError(f"{path} is {st.st_size} bytes; a state file is at most {MAX_BYTES}")
    try:
        with open(path, "rb") as f:
            doc = json.loads(f.read(MAX_BYTES + 1).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise UserError(f"{path} is not valid UTF-8 JSON: {e}") from None
    except RecursionError:
        raise UserError(f"{path} is JSON nested too deeply to be a state file") from None
    if not isinstance(doc, dict):
        raise UserError(f"{path} holds a JSON {type(doc).__name__}, not an object")
    return doc


def _int_field(doc: Mapping[str, Any], key: str, path: Path) -> int:
    v = doc.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise UserError(f"{path}: field {key!r} is {v!r}; it must be an integer >= 0")
    return v


def read_checkpoint(ckpt_dir: str | os.PathLike[str]) -> tuple[dict[str, Any], int]:
    """The loader state saved in ``ckpt_dir`` and the checkpoint's global step, checked against
    each other; a checkpoint without a loader state, or with a malformed one, is refused."""
    d = Path(ckpt_dir)
    if not d.is_dir():
        raise UserError(f"resume_from_checkpoint {str(d)!r} is not a directory")
    path = d / STATE_NAME
    if not path.exists() and not path.is_symlink():
        raise UserError(
            f"checkpoint {d} has no {STATE_NAME}: it was not saved by DDTrainer, or its save "
            "did not finish; resume from a checkpoint DDTrainer wrote"
        )
    doc = read_json(path)
    if doc.get("format") != FORMAT or doc.get("version") != VERSION:
        raise UserError(
            f"{path}: format {doc.get('format')!r} version {doc.get('version')!r} is not "
            f"{FORMAT!r} version {VERSION}"
        )
    saved_step = _int_field(doc, "global_step", path)
    loader = doc.get("loader")
    if not isinstance(loader, dict):
        raise UserError(f"{path}: field 'loader' is a {type(loader).__name__}, not an object")
    trainer = read_json(d / TRAINER_STATE)
    global_step = _int_field(trainer, "global_step", d / TRAINER_STATE)
    if global_step != saved_step:
        raise UserError(
            f"checkpoint {d}: the loader state was saved at global step {saved_step} but "
            f"{TRAINER_STATE} is at step {global_step}; the files come from different saves"
        )
    return loader, global_step
