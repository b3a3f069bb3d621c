"""Attacks on datasets in object storage (issue 22 items 1, 6, 8, 15, 18), each seen failing on
the code before its fix: a remote manifest naming a local file, a cached copy replaced with
same-size bytes, a finished shard replaced in storage before a resumed prepare, DDECOMP_CACHE
pointing at a file, an unreachable AWS_ENDPOINT_URL, and a ``--tails pack`` dataset in storage."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ddecomp import DataError, TokensConfig, open_dataset, prepare_tokens
from ddecomp.cli import main
from ddecomp.data.layout import fingerprint
from tests._fixtures import EOS, free_port, identity_tokens, random_lengths
from tests._s3 import BUCKET, s3_fs, s3_server  # skips the module without fsspec, s3fs, moto

s3 = s3_server
KW: dict[str, Any] = dict(eos_id=EOS, dtype="uint32", min_len=16, max_len=256, val_fraction=0.1,
          shard_size=20_000)  # fmt: skip


def _prepare(tmp_path: Path, name: str, **extra: Any) -> tuple[str, Path, Path]:
    """``(url, local copy, token source)`` of one small dataset prepared both ways."""
    src = tmp_path / "tokens.bin"
    identity_tokens(random_lengths(150, seed=9, hi=1500)).tofile(src)
    url = f"s3://{BUCKET}/{name}"
    prepare_tokens(TokensConfig(src, url, **KW, **extra))  # type: ignore[arg-type]
    prepare_tokens(TokensConfig(src, tmp_path / "local", **KW, **extra))
    return url, tmp_path / "local", src


def _all_rows(ds: Any) -> list[np.ndarray]:
    out = []
    for L in ds.bucket_lengths:
        buf = np.empty((ds.num_rows(L), L + 1), np.int64)
        ds.fill(L, np.arange(ds.num_rows(L)), buf)
        out.append(buf)
    return out


def _same(a: Any, b: Any) -> bool:
    ra, rb = _all_rows(a), _all_rows(b)
    assert sum(r.shape[0] for r in ra) > 50  # vacuity: many rows compared
    return len(ra) == len(rb) and all(np.array_equal(x, y) for x, y in zip(ra, rb, strict=True))


@pytest.mark.parametrize("key", ["tokens_file", "tokens_files"])
def test_a_remote_manifest_never_maps_a_local_file(
    tmp_path: Path, s3: dict[str, str], monkeypatch: pytest.MonkeyPatch, key: str
) -> None:
    """Item 1: a manifest in storage whose shard 0 is a range of a local 'tokens_file' (with a
    fingerprint recomputed) made open_dataset map that file and serve it (a secret was read).
    Issue 21: the refusal covers ``tokens_files`` (several in-place files) too, before any of its
    fields is checked (before the fix, a field check answered instead: the record has no
    "header")."""
    monkeypatch.setenv("DDECOMP_CACHE", str(tmp_path / "cache"))
    name = key.replace("_", "-")
    url, _, _ = _prepare(tmp_path, name)
    man = json.loads(s3_fs().cat_file(f"{BUCKET}/{name}/manifest.json"))
    tok = man["shards"][0]["files"]["tokens"]
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"S" * tok["bytes"])
    ref = {"path": str(secret), "bytes": tok["bytes"]}
    if key == "tokens_file":
        man["tokens_file"] = ref
        tok["offset"] = 0
    else:
        man["tokens_files"] = [ref]
        tok.update(offset=0, file=0)
    man["fingerprint"] = fingerprint(man)
    s3_fs().pipe_file(f"{BUCKET}/{name}/manifest.json", json.dumps(man).encode())
    with pytest.raises(DataError, match="names a local token file") as e:
        _all_rows(open_dataset(url, cache_dir=tmp_path / "c"))  # old code: the secret's bytes
    assert "\n" not in str(e.value)


def test_a_cached_copy_replaced_with_same_size_bytes_is_never_served(
    tmp_path: Path, s3: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Item 6: the cache trusted a cached file by its size; an index file and token bytes
    replaced in the cache (same sizes, mtimes restored) were served."""
    monkeypatch.setenv("DDECOMP_CACHE", str(tmp_path / "cache"))
    url, local, _ = _prepare(tmp_path, "cached")
    assert _same(open_dataset(url, cache_dir=tmp_path / "c"), open_dataset(local))
    index = sorted((tmp_path / "c").rglob("*.train.L00016.npy"))
    tokens = sorted((tmp_path / "c").rglob("*.chunk")) or sorted(
        (tmp_path / "c").rglob("*.tokens.bin")
    )
    assert index
    assert tokens  # vacuity: both kinds are cached
    for path in (index[0], tokens[0]):
        st = path.stat()
        data = bytearray(path.read_bytes())
        data[-8:] = bytes(8) if data[-8:] != bytes(8) else b"\x01" * 8  # same size, other bytes
        path.write_bytes(bytes(data))
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # and the mtime put back
    assert _same(open_dataset(url, cache_dir=tmp_path / "c"), open_dataset(local))


def test_a_resumed_prepare_redoes_a_shard_replaced_in_storage(
    tmp_path: Path, s3: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Item 8: a rerun kept a finished shard by its size alone; a token object replaced with
    same-size bytes before the rerun ended in a dataset no reader could use."""
    monkeypatch.setenv("DDECOMP_CACHE", str(tmp_path / "cache"))
    url, local, src = _prepare(tmp_path, "resumed")
    fs = s3_fs()
    fs.rm_file(f"{BUCKET}/resumed/manifest.json")  # an interrupted run: no manifest yet
    key = f"{BUCKET}/resumed/shards/00001.tokens.bin"
    data = bytearray(fs.cat_file(key))
    data[40] ^= 0xFF
    fs.pipe_file(key, bytes(data))
    prepare_tokens(TokensConfig(src, url, **KW))  # type: ignore[arg-type]
    assert fs.cat_file(key) == (local / "shards" / "00001.tokens.bin").read_bytes()
    assert _same(open_dataset(url, cache_dir=tmp_path / "c"), open_dataset(local))


def test_a_cache_variable_pointing_at_a_file_is_one_line(
    tmp_path: Path, s3: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """Item 15: DDECOMP_CACHE naming a file was a NotADirectoryError traceback."""
    monkeypatch.setenv("DDECOMP_CACHE", str(tmp_path / "cache"))
    url, _, _ = _prepare(tmp_path, "cachefile")
    capsys.readouterr()
    afile = tmp_path / "afile"
    afile.write_text("x")
    monkeypatch.setenv("DDECOMP_CACHE", str(afile))
    assert main(["stats", url]) == 2
    err = capsys.readouterr().err
    assert "is not a directory" in err
    assert err.count("\n") == 1
    assert afile.read_text() == "x"


def test_an_unreachable_endpoint_is_one_line_within_seconds(
    monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """Item 15: an AWS_ENDPOINT_URL nobody listens on was a traceback after 6-9 s."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    for argv in (["stats", "s3://nobody/x"], ["plan", "s3://nobody/x"], ["verify", "s3://b/x"]):
        t0 = time.monotonic()
        assert main(argv) == 2
        assert time.monotonic() - t0 < 5
        err = capsys.readouterr().err
        assert "does not answer" in err
        assert err.count("\n") == 1


def test_a_packed_tails_dataset_in_storage_is_readable(
    tmp_path: Path, s3: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Item 18: prepare --tails pack --out s3://... wrote a dataset the remote reader refused
    ("format version 2 is not supported")."""
    monkeypatch.setenv("DDECOMP_CACHE", str(tmp_path / "cache"))
    url, local, _ = _prepare(tmp_path, "packed", tails="pack")
    ds = open_dataset(url, cache_dir=tmp_path / "c")
    assert ds.packed_lengths  # vacuity: tail rows are there
    assert _same(ds, open_dataset(local))


def test_a_forged_chunk_record_is_refused_before_anything_is_written(
    tmp_path: Path, s3: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Attack on the chunk digests (new with on-demand reads): a record naming another path or
    sizes that do not fit is one line, and nothing is written outside the cache."""
    monkeypatch.setenv("DDECOMP_CACHE", str(tmp_path / "cache"))
    url, _, _ = _prepare(tmp_path, "forged")
    key = f"{BUCKET}/forged/manifest.json"
    good = s3_fs().cat_file(key)
    forgeries: list[dict[str, Any]] = [
        {"path": "../../outside.bin"},
        {"bytes": 0},
        {"size": 32},
        {"sha256": "zz" * 32},
        {"extra": 1},
    ]
    for forge in forgeries:
        man = json.loads(good)
        man["shards"][0]["files"]["tokens"]["chunks"].update(forge)
        s3_fs().pipe_file(key, json.dumps(man).encode())
        with pytest.raises(DataError, match=r"shard 00000's files.tokens.chunks is damaged") as e:
            open_dataset(url, cache_dir=tmp_path / "c" / "d")
        assert "\n" not in str(e.value)
    assert not (tmp_path / "outside.bin").exists()
    assert not (tmp_path / "c" / "outside.bin").exists()


def test_the_chunk_cache_deletes_only_its_own_files(
    tmp_path: Path, s3: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reopened reader clears its unfinished writes and evicts chunks down to the limit: a
    file of the user's in the cache directory (``notes.chunk``, ``.mine.tmp``) survives."""
    monkeypatch.setenv("DDECOMP_CACHE", str(tmp_path / "cache"))
    url, _, _ = _prepare(tmp_path, "own-files")
    ds = open_dataset(url, cache_dir=tmp_path / "c", cache_limit=1 << 20)
    assert ds.remote is not None
    L = ds.bucket_lengths[-1]
    ds.rows(L, np.arange(ds.num_rows(L)))  # fills the disk cache
    store = ds.remote.store.dir
    assert any(p.name.endswith(".chunk") for p in store.iterdir())  # vacuity: chunks cached
    (store / "notes.chunk").write_text("mine")
    (store / ".mine.tmp").write_text("mine")
    again = open_dataset(url, cache_dir=tmp_path / "c", cache_limit=1)  # evicts to <= 1 byte
    assert again.remote is not None
    assert (store / "notes.chunk").read_text() == "mine"
    assert (store / ".mine.tmp").read_text() == "mine"
    assert not [p for p in store.glob("0*.chunk")]  # its own chunks were evicted


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "1e30", "5X", "True", "G", "0x10"])
def test_a_nonsense_cache_limit_in_the_environment_is_one_line_from_the_cli(
    tmp_path: Path, s3: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: Any, value: str
) -> None:
    """``$DDECOMP_CACHE_LIMIT`` as a user sets it wrong, through ``ddecomp stats URL`` (which opens
    the dataset): exit 2 and one line naming the variable, before anything is cached."""
    url, _, _ = _prepare(tmp_path, f"limit-{value.lower()}")
    monkeypatch.setenv("DDECOMP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("DDECOMP_CACHE_LIMIT", value)
    capsys.readouterr()
    assert main(["stats", url]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert f"$DDECOMP_CACHE_LIMIT={value!r} is not a byte count" in err[0]
    monkeypatch.setenv("DDECOMP_CACHE_LIMIT", "1M")  # the corrected rerun works
    assert main(["stats", url]) == 0
