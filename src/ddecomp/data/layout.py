"""The on-disk format: file names, the format version, the manifest and its fingerprint.

A prepared dataset is one directory::

    DIR/manifest.json                 written last; format name + version, config, counts, files
    DIR/tokenizer.json                the tokenizer used (copied or trained): DIR is self-contained
    DIR/shards/00000.tokens.bin       the shard's documents concatenated, raw uint16/uint32
    DIR/shards/00000.docs.npy         int64 [n_docs + 1] document start offsets (fenceposts)
    DIR/shards/00000.split.npy        uint8 [n_docs]: 0 = train, 1 = held-out validation
    DIR/shards/00000.train.L00256.npy int64 row start offsets of bucket L = 256 (rows are
                                      tokens[s : s + L + 1]; no token is copied into a bucket)
    DIR/shards/00000.done.json        the shard's record; its presence marks the shard finished

Every file is written through :mod:`ddecomp.io` (temporary name + rename, sha256 computed as the
bytes are written). The manifest's ``fingerprint`` is the sha256 of its canonical JSON
without the fingerprint itself and the creation time: two preparations with the same inputs and
arguments have the same fingerprint, whatever the number of workers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ddecomp.errors import UserError
from ddecomp.io import canonical_sha256, read_json

FORMAT_NAME = "ddecomp"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
TOKENIZER_FILE = "tokenizer.json"
SHARD_DIR = "shards"
SPLITS = ("train", "val")
_VOLATILE_KEYS = ("fingerprint", "created", "elapsed_s", "prepare")


def shard_name(index: int) -> str:
    return f"{index:05d}"


def bucket_file(shard: str, split: str, L: int) -> str:
    return f"{SHARD_DIR}/{shard}.{split}.L{L:05d}.npy"


def fingerprint(manifest: dict[str, Any]) -> str:
    """sha256 of the manifest's canonical JSON, without fields that vary between equal runs."""
    return canonical_sha256({k: v for k, v in manifest.items() if k not in _VOLATILE_KEYS})


def load_manifest(root: Path) -> dict[str, Any]:
    """Read and check ``root/manifest.json``; a user error if missing, foreign or too new."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        hint = " (an interrupted prepare? rerun it)" if (Path(root) / SHARD_DIR).is_dir() else ""
        raise UserError(f"{root}: no {MANIFEST}, not a prepared ddecomp dataset{hint}")
    try:
        man = read_json(path)
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: unreadable manifest ({e}); run `ddecomp prepare` again") from e
    if not isinstance(man, dict) or man.get("format") != FORMAT_NAME:
        raise UserError(f"{path}: not a ddecomp manifest (format={man.get('format')!r})")
    ver = man.get("version")
    if ver != FORMAT_VERSION:
        raise UserError(
            f"{path}: format version {ver} is not supported by this ddecomp "
            f"(reads version {FORMAT_VERSION}); prepare the data again or use a matching ddecomp"
        )
    return man
