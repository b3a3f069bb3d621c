"""Owning an output directory: the run's identity, refusal of a different one, resume.

``prepare`` writes ``.prepare.json`` (its *identity*: every argument that changes the bytes, and
the inputs' sizes and modification times) before anything else, and only into an empty (or new)
directory. A later run into the same directory:

- with the same identity and a finished manifest: nothing to do, the manifest is returned;
- with the same identity and no manifest (interrupted): keep the finished shards, redo the rest;
- with another identity: refused, naming the differing fields, unless ``overwrite``.

``overwrite`` removes only what ddecomp wrote: its own names at the top (manifest, tokenizer,
``.prepare.json``) and, in ``shards/``, the files named as ddecomp names shard files (every
file a ``done.json`` lists, an interrupted shard's, a killed write's temporary). Anything else
(a user's notes, a file they keep beside the data) stays, and ``shards/`` with it. A non-empty
directory without ``.prepare.json`` was not written by ddecomp: it is refused even with
``overwrite``, so a mistyped ``--out`` never deletes a user's ``manifest.json`` or ``shards/``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ddecomp.data.layout import FORMAT_NAME, MANIFEST, SHARD_DIR, TOKENIZER_FILE
from ddecomp.dirlock import LOCK_FILE
from ddecomp.errors import UserError
from ddecomp.io import canonical_sha256, read_json, write_json_atomic
from ddecomp.version import __version__

STATE_FILE = ".prepare.json"


# Every name ddecomp gives a file in shards/: 00000.tokens.bin, 00000.train.L00256.npy, ...
# and the temporary ".<name>.<random>.tmp" of a write in progress (io.atomic_file).
_SHARD_FILE = (
    r"\d{5,}\.(?:tokens\.bin|chunks\.bin|docs\.npy|split\.npy|done\.json"
    r"|(?:train|val)\.(?:L\d{5,}|tail\.(?:starts|targets))\.npy)"
)
_OWN_SHARD_NAME = re.compile(rf"{_SHARD_FILE}|\.{_SHARD_FILE}\.[^/]*\.tmp")
# A killed write of a top-level file leaves ".manifest.json.<random>.tmp" and the like.
_OWN_TOP_TMP = re.compile(r"\.(?:manifest\.json|tokenizer\.json|\.prepare\.json)\.[^/]*\.tmp")


def _read_state(out: Path) -> dict[str, Any] | None:
    """``.prepare.json``'s content; None when absent (the directory is not ddecomp's)."""
    path = out / STATE_FILE
    if not path.is_file():
        return None
    try:
        state = read_json(path)
    except (OSError, ValueError) as e:
        raise UserError(f"{path} is unreadable ({e}); choose another --out directory") from e
    if not isinstance(state, dict) or "identity" not in state:
        raise UserError(f"{path} was not written by ddecomp; choose another --out directory")
    return state


def _remove_own_files(out: Path, old_kind: object) -> None:
    """Remove what a ddecomp run wrote into ``out`` (see the module docstring), nothing else."""
    if old_kind != "text" and (out / TOKENIZER_FILE).exists():  # a --from-tokens run writes none
        raise UserError(
            f"{out / TOKENIZER_FILE} was not written by ddecomp; move it away, or choose another "
            "--out"
        )
    man = out / MANIFEST
    if man.is_file():
        try:
            ours = read_json(man).get("format") == FORMAT_NAME
        except (OSError, ValueError, AttributeError):
            ours = False
        if not ours:
            raise UserError(
                f"{man} was not written by ddecomp; move it away, or choose another --out"
            )
    shards = out / SHARD_DIR
    if shards.is_dir():
        for p in shards.iterdir():
            if p.is_file() and _OWN_SHARD_NAME.fullmatch(p.name):
                p.unlink()
        if not any(shards.iterdir()):
            shards.rmdir()
    for name in (MANIFEST, TOKENIZER_FILE, STATE_FILE):  # the state last: a kill midway resumes
        (out / name).unlink(missing_ok=True)


def remove_stale_temps(out: Path) -> None:
    """Remove our temporaries in ``shards/``: half-written by a killed run or a killed task.

    Called when a run claims the directory and again before the manifest (a Ray task killed
    midway and retried leaves its first attempt's temporary; no writer is left at that point).
    """
    for stale in (out / SHARD_DIR).glob(".*.tmp"):
        if _OWN_SHARD_NAME.fullmatch(stale.name):
            stale.unlink(missing_ok=True)


def claim_dir(out: Path, identity: dict[str, Any], overwrite: bool) -> dict[str, Any] | None:
    """Make ``out`` ours for this identity. Returns the finished manifest if already done."""
    state_path = out / STATE_FILE
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a directory")
    shards = out / SHARD_DIR
    if shards.is_symlink() or (shards.exists() and not shards.is_dir()):
        # Writes (and --overwrite's removals) through it would land in another directory.
        raise UserError(
            f"{shards} is a symlink or not a directory; ddecomp never writes or deletes "
            "through a symlink: remove it, or choose another --out"
        )
    # A run killed during its first write leaves only a temporary file of ours (and the lock
    # file of the run that holds the directory now): not "used".
    used = out.is_dir() and any(
        not (_OWN_TOP_TMP.fullmatch(p.name) or p.name == LOCK_FILE) for p in out.iterdir()
    )
    if used:
        state = _read_state(out)
        if state is None:
            raise UserError(
                f"--out {out} is not empty and holds no ddecomp dataset (no {STATE_FILE}); "
                "ddecomp did not write its files and never removes them: choose an empty or "
                "new directory"
            )
        old = state["identity"]
        if overwrite:
            _remove_own_files(out, (old or {}).get("kind"))
        elif old != identity:
            diff = sorted(
                k for k in set(old or {}) | set(identity) if (old or {}).get(k) != identity.get(k)
            )
            hint = (
                " (an input file was added, removed or modified since)" if "inputs" in diff else ""
            )
            raise UserError(
                f"--out {out} holds a dataset prepared with other arguments (differs in: "
                f"{', '.join(diff)}){hint}; pass --overwrite to replace it or choose another "
                "directory"
            )
        else:
            man_path = out / MANIFEST
            if man_path.is_file():
                try:  # a damaged manifest is rewritten by this run (its shards are checked)
                    man = read_json(man_path)
                    done = man["prepare"]["identity_sha256"] == canonical_sha256(identity)
                except (OSError, ValueError, KeyError, TypeError):
                    done = False
                if done:
                    return dict(man)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out)
    write_json_atomic(state_path, {"identity": identity, "ddecomp": __version__})
    return None


def claim_staging(out: Path, identity: dict[str, Any]) -> None:
    """Claim the local staging directory of a ``--out URL`` run: it is ddecomp's alone, so
    another identity's files are removed instead of refused (the remote prefix was checked)."""
    state = _read_state(out) if out.is_dir() else None
    if state is not None and state["identity"] != identity:
        _remove_own_files(out, state["identity"].get("kind"))
    claim_dir(out, identity, overwrite=False)
