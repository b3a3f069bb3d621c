"""verify: intact datasets pass; each kind of damage is named with its file, exit code 1."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from ddecomp import DataError, TokensConfig, prepare_tokens
from ddecomp.data.layout import MANIFEST, fingerprint
from ddecomp.data.verify import verify_dataset
from tests._fixtures import EOS, identity_tokens, random_lengths, run_python


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("v") / "ds"
    toks = identity_tokens(random_lengths(200, seed=8, hi=2000))
    prepare_tokens(
        TokensConfig(toks, root, EOS, min_len=16, max_len=512, val_fraction=0.1, shard_size=20_000)
    )
    return root


def _copy(good: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "ds"
    shutil.copytree(good, dst)
    return dst


def test_intact_dataset_verifies(good: Path) -> None:
    res = verify_dataset(good)
    assert res["shards"] > 2
    assert res["kept_targets"]["train"] > 0
    assert res["kept_targets"]["val"] > 0


def test_flipped_token_byte_is_caught(good: Path, tmp_path: Path) -> None:
    ds = _copy(good, tmp_path)
    f = ds / "shards" / "00001.tokens.bin"
    b = bytearray(f.read_bytes())
    b[100] ^= 1
    f.write_bytes(bytes(b))
    with pytest.raises(DataError, match=r"00001\.tokens\.bin: sha256 differs"):
        verify_dataset(ds)


def test_truncated_bucket_file_is_caught(good: Path, tmp_path: Path) -> None:
    ds = _copy(good, tmp_path)
    f = next((ds / "shards").glob("00000.train.L*.npy"))
    f.write_bytes(f.read_bytes()[:-8])
    with pytest.raises(DataError, match=f"{f.name}: .* bytes, manifest says"):
        verify_dataset(ds)


def test_edited_manifest_breaks_the_fingerprint(good: Path, tmp_path: Path) -> None:
    ds = _copy(good, tmp_path)
    man = json.loads((ds / MANIFEST).read_text())
    man["splits"]["train"]["kept_targets"] += 1
    (ds / MANIFEST).write_text(json.dumps(man))
    with pytest.raises(DataError, match="fingerprint"):
        verify_dataset(ds)


def _rewrite_bucket(ds: Path, transform) -> str:
    """Replace a bucket file consistently (size, sha, fingerprint) so only invariants can fail."""
    from ddecomp.io import write_npy_atomic

    man = json.loads((ds / MANIFEST).read_text())
    sh = man["shards"][0]
    key = sorted(sh["buckets"]["train"], key=int)[-1]
    rec = sh["buckets"]["train"][key]
    arr = transform(np.load(ds / rec["path"]), int(key))
    rec.update(write_npy_atomic(ds, rec["path"], arr))
    rec["rows"] = int(arr.size)
    man["fingerprint"] = fingerprint(man)
    (ds / MANIFEST).write_text(json.dumps(man))
    return rec["path"]


def test_row_crossing_a_document_end_is_caught(good: Path, tmp_path: Path) -> None:
    ds = _copy(good, tmp_path)
    path = _rewrite_bucket(ds, lambda a, L: np.concatenate([a[:-1], a[-1:] + L]))
    with pytest.raises(
        DataError, match=rf"{Path(path).name}: row .* not inside one train document"
    ):
        verify_dataset(ds)


def test_duplicated_row_is_caught(good: Path, tmp_path: Path) -> None:
    ds = _copy(good, tmp_path)
    _rewrite_bucket(ds, lambda a, L: np.sort(np.concatenate([a, a[:1]])))
    with pytest.raises(DataError, match="share a target"):
        verify_dataset(ds)


def test_cli_exit_codes_and_one_line(good: Path, tmp_path: Path) -> None:
    ok = run_python("-m", "ddecomp", "verify", str(good))
    assert ok.returncode == 0
    assert "OK" in ok.stdout
    ds = _copy(good, tmp_path)
    (ds / "shards" / "00000.docs.npy").unlink()
    bad = run_python("-m", "ddecomp", "verify", str(ds))
    assert bad.returncode == 1
    assert bad.stderr.strip().count("\n") == 0
    assert "00000.docs.npy: missing" in bad.stderr
    none = run_python("-m", "ddecomp", "verify", str(tmp_path / "nope"))
    assert none.returncode == 2
    assert "Traceback" not in none.stderr


def _forge(ds: Path, edit) -> None:
    man = json.loads((ds / MANIFEST).read_text())
    edit(man)
    man["fingerprint"] = fingerprint(man)
    (ds / MANIFEST).write_text(json.dumps(man))


def test_split_bucket_summary_that_differs_from_the_shards_is_caught(
    good: Path, tmp_path: Path
) -> None:
    ds = _copy(good, tmp_path)

    def edit(man: dict) -> None:
        b = man["splits"]["train"]["buckets"]["16"]
        b["rows"] += 1
        b["tokens"] += 16

    _forge(ds, edit)
    with pytest.raises(DataError, match=r"splits\.train\.buckets differs"):
        verify_dataset(ds)


def test_split_document_count_that_differs_from_the_shards_is_caught(
    good: Path, tmp_path: Path
) -> None:
    ds = _copy(good, tmp_path)

    def edit(man: dict) -> None:  # one more empty document: the accounting still adds up
        tot = man["splits"]["val"]
        tot["documents"] += 1
        tot["tokens"] += 1
        tot["dropped"]["document_shorter_than_min"]["documents"] += 1
        tot["dropped"]["document_shorter_than_min"]["tokens"] += 1
        man["totals"]["documents"] += 1
        man["totals"]["tokens"] += 1

    _forge(ds, edit)
    with pytest.raises(DataError, match=r"val shards hold \d+ documents"):
        verify_dataset(ds)


def test_corpus_totals_that_do_not_add_up_the_splits_are_caught(good: Path, tmp_path: Path) -> None:
    ds = _copy(good, tmp_path)
    _forge(ds, lambda man: man["totals"].update(kept_targets=man["totals"]["kept_targets"] + 1))
    with pytest.raises(DataError, match="totals"):
        verify_dataset(ds)
