"""Owning an output directory: the run's identity, refusal of a different one, resume.

``prepare`` writes ``.prepare.json`` (its *identity*: every argument that changes the bytes, and
the input's listing) before anything else. A later run into the same directory:

- with the same identity and a finished manifest: nothing to do, the manifest is returned;
- with the same identity and no manifest (interrupted): keep the finished shards, redo the rest;
- with another identity: refused, naming the differing fields, unless ``overwrite`` (which removes
  only ddecomp's own files); a non-empty directory that is not a ddecomp dataset is refused too.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from ddecomp.data.layout import MANIFEST, SHARD_DIR, TOKENIZER_FILE
from ddecomp.errors import UserError
from ddecomp.io import canonical_sha256, read_json, write_json_atomic
from ddecomp.version import __version__

STATE_FILE = ".prepare.json"


def claim_dir(out: Path, identity: dict[str, Any], overwrite: bool) -> dict[str, Any] | None:
    """Make ``out`` ours for this identity. Returns the finished manifest if already done."""
    state_path = out / STATE_FILE
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a directory")
    used = out.is_dir() and any(out.iterdir())
    if used and not overwrite:
        if not state_path.is_file():
            raise UserError(
                f"--out {out} is not empty and holds no ddecomp dataset; choose an empty "
                "directory or pass --overwrite"
            )
        old = read_json(state_path).get("identity")
        if old != identity:
            diff = sorted(
                k for k in set(old or {}) | set(identity) if (old or {}).get(k) != identity.get(k)
            )
            raise UserError(
                f"--out {out} holds a dataset prepared with other arguments (differs in: "
                f"{', '.join(diff)}); pass --overwrite to replace it or choose another directory"
            )
        man_path = out / MANIFEST
        if man_path.is_file():
            man = read_json(man_path)
            if man.get("prepare", {}).get("identity_sha256") == canonical_sha256(identity):
                return dict(man)
    if used and overwrite:
        for name in (MANIFEST, STATE_FILE, TOKENIZER_FILE):
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / SHARD_DIR, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    for stale in (out / SHARD_DIR).glob(".*.tmp"):  # half-written by a killed run
        stale.unlink(missing_ok=True)
    write_json_atomic(state_path, {"identity": identity, "ddecomp": __version__})
    return None
