"""A damaged ``--tails pack`` dataset is refused with one DataError line, never trained on.

Each fault rewrites a tail file *and* its checksums in the manifest (fingerprint recomputed), so
only the format's invariants can catch it: a piece moved across a document boundary, a row that
no longer sums to its length, a tail record that disagrees with the files.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from ddecomp import DataError, TokensConfig, open_dataset, prepare_tokens
from ddecomp.data.layout import MANIFEST, fingerprint
from ddecomp.data.verify import verify_dataset
from ddecomp.io import sha256_file
from tests._fixtures import EOS, identity_tokens, random_lengths


def _dataset(tmp: Path) -> Path:
    out = tmp / "ds"
    toks = identity_tokens(random_lengths(200, seed=9, hi=300))
    prepare_tokens(TokensConfig(tokens=toks, out=out, eos_id=EOS, min_len=32, max_len=64,
                                tails="pack"))  # fmt: skip
    return out


def _rewrite(root: Path, kind: str, change: Callable[[np.ndarray], None]) -> None:
    man = json.loads((root / MANIFEST).read_text())
    rec = man["shards"][0]["tails"]["train"][kind]
    arr = np.load(root / rec["path"])
    change(arr)
    np.save(root / rec["path"], arr)
    rec.update(bytes=(root / rec["path"]).stat().st_size, sha256=sha256_file(root / rec["path"]))
    man["fingerprint"] = fingerprint(man)
    (root / MANIFEST).write_text(json.dumps(man))


def _shift_first_piece(arr: np.ndarray) -> None:
    arr[0] += 1  # the piece now ends one token past its document (tails end at the EOS)


def _grow_first_piece(arr: np.ndarray) -> None:
    arr[0] += 1  # its row now holds one position too many


@pytest.mark.parametrize(
    ("kind", "change", "where"),
    [("starts", _shift_first_piece, "verify"), ("targets", _grow_first_piece, "open")],
)
def test_damaged_tail_rows_are_refused(
    tmp_path: Path, kind: str, change: Callable[[np.ndarray], None], where: str
) -> None:
    root = _dataset(tmp_path)
    verify_dataset(root)  # sound before the damage
    _rewrite(root, kind, change)
    with pytest.raises(DataError, match="tail"):
        verify_dataset(root)
    if where == "open":
        with pytest.raises(DataError, match="tail"):
            open_dataset(root)


def test_tail_record_must_match_policy(tmp_path: Path) -> None:
    root = _dataset(tmp_path)
    man = json.loads((root / MANIFEST).read_text())
    man["tails"] = {"policy": "drop"}  # tail files listed but the policy says drop
    man["fingerprint"] = fingerprint(man)
    (root / MANIFEST).write_text(json.dumps(man))
    with pytest.raises(DataError, match="tails"):
        open_dataset(root)


def test_version_must_match_the_policy(tmp_path: Path) -> None:
    root = _dataset(tmp_path)
    man = json.loads((root / MANIFEST).read_text())
    assert man["version"] == 2  # an older ddecomp refuses it instead of dropping the tail rows
    man["version"] = 1
    man["fingerprint"] = fingerprint(man)
    (root / MANIFEST).write_text(json.dumps(man))
    with pytest.raises(DataError, match="version"):
        open_dataset(root)
