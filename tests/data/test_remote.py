"""Datasets in object storage: prepare to, open from and verify against a real S3-compatible
server (moto's standalone server, started by the fixture on 127.0.0.1 and stopped after)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ddecomp import DataError, TokensConfig, UserError, open_dataset, prepare_tokens
from ddecomp.data.verify import verify_dataset
from tests._fixtures import EOS, SRC, identity_tokens, random_lengths
from tests._s3 import BUCKET, s3_fs, s3_server  # skips the module without fsspec, s3fs, moto

s3 = s3_server
_fs = s3_fs


def _tokens(tmp_path: Path) -> Path:
    src = tmp_path / "tokens.bin"
    identity_tokens(random_lengths(300, seed=5, hi=3000)).tofile(src)
    return src


KW: dict[str, Any] = dict(eos_id=EOS, dtype="uint32", min_len=16, max_len=512, val_fraction=0.1,
          shard_size=20_000)  # fmt: skip


def _read_all(ds: Any) -> None:
    for L in ds.bucket_lengths:
        ds.rows(L, np.arange(ds.num_rows(L)))


def _same_rows(a, b) -> int:
    n = 0
    assert a.bucket_rows == b.bucket_rows
    for L in a.bucket_lengths:
        idx = np.arange(a.num_rows(L))
        np.testing.assert_array_equal(a.rows(L, idx), b.rows(L, idx))
        n += idx.size
    return n


def test_prepare_to_s3_then_open_and_verify_through_the_cache(
    tmp_path: Path, s3: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DDECOMP_CACHE", str(tmp_path / "cache"))
    src = _tokens(tmp_path)
    local = prepare_tokens(TokensConfig(src, tmp_path / "local", **KW))
    url = f"s3://{BUCKET}/ds1"
    man = prepare_tokens(TokensConfig(src, url, workers=2, **KW))  # type: ignore[arg-type]
    assert man["fingerprint"] == local["fingerprint"]
    names = {k.split("/ds1/", 1)[1] for k in _fs().find(f"{BUCKET}/ds1")}
    here = {str(p.relative_to(tmp_path / "local")) for p in (tmp_path / "local").rglob("*")
            if p.is_file()}  # fmt: skip
    chunks = {n for n in names if n.endswith(".chunks.bin")}  # the digests reads check
    assert len(chunks) == local["totals"]["shards"]
    assert names - chunks == here  # every file, and no temporary or staging leftover
    staged = [p for p in (tmp_path / "cache" / "staging").rglob("*") if p.is_file()]
    assert all(p.name in (".prepare.json", "manifest.json") for p in staged), staged
    ds = open_dataset(url, cache_dir=tmp_path / "c1")
    assert str(ds.root).startswith(str(tmp_path / "c1"))
    assert _same_rows(ds, open_dataset(tmp_path / "local")) > 100
    assert verify_dataset(url, cache_dir=tmp_path / "c2")["shards"] == local["totals"]["shards"]
    # the same arguments again: already finished, nothing rewritten
    again = prepare_tokens(TokensConfig(src, url, **KW))  # type: ignore[arg-type]
    assert again["fingerprint"] == man["fingerprint"]
    with pytest.raises(UserError, match="prepared with other arguments"):
        prepare_tokens(TokensConfig(src, url, **{**KW, "min_len": 32}))  # type: ignore[arg-type]


def test_a_file_changed_in_storage_is_never_read(
    tmp_path: Path, s3: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DDECOMP_CACHE", str(tmp_path / "cache"))
    url = f"s3://{BUCKET}/ds2"
    prepare_tokens(TokensConfig(_tokens(tmp_path), url, **KW))  # type: ignore[arg-type]
    key = f"{BUCKET}/ds2/shards/00001.tokens.bin"
    data = bytearray(_fs().cat_file(key))
    data[100] ^= 1  # same size, one bit
    _fs().pipe_file(key, bytes(data))
    ds = open_dataset(url, cache_dir=tmp_path / "c")  # the index files are intact
    with pytest.raises(DataError, match=r"ds2/shards/00001.tokens.bin: bytes \[0, 65536\) differ"):
        _read_all(ds)
    assert not list((tmp_path / "c").rglob("00001.000000000.chunk"))  # nothing unverified kept
    with pytest.raises(DataError, match=r"ds2/shards/00001.tokens.bin: .* another sha256"):
        verify_dataset(url, cache_dir=tmp_path / "c2")
    assert not list((tmp_path / "c2").rglob("00001.tokens.bin"))
    assert not list((tmp_path / "c2").rglob("manifest.json"))


def test_a_killed_upload_reruns_to_the_same_dataset(
    tmp_path: Path, s3: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("DDECOMP_CACHE", str(cache))
    src = _tokens(tmp_path)
    local = prepare_tokens(TokensConfig(src, tmp_path / "local", **KW))
    assert local["totals"]["shards"] >= 6
    url = f"s3://{BUCKET}/ds3"
    # The CLI in its own process, killed (SIGKILL) in the middle of shard 2's upload: its token
    # file is up, its other files and its record are not.
    code = f"""
import os, signal, sys
from ddecomp.cli import main
from ddecomp.preparing.remote_out import RemoteOut
upload = RemoteOut.upload_shard
def killed(self, staging, rec):
    if rec["index"] == 2:
        rel = rec["files"]["tokens"]["path"]
        self.fs.put_file(str(staging / rel), self.path(rel))
        os.kill(os.getpid(), signal.SIGKILL)
    return upload(self, staging, rec)
RemoteOut.upload_shard = killed
main(["prepare", "--from-tokens", {str(src)!r}, "--dtype", "uint32", "--eos-id", "{EOS}",
      "--min-len", "16", "--max-len", "512", "--val-fraction", "0.1", "--shard-size", "0.02",
      "--workers", "1", "--quiet", "--out", {url!r}])
"""
    env = {**os.environ, "PYTHONPATH": str(SRC), "DDECOMP_CACHE": str(cache)}
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=300)
    assert res.returncode == -signal.SIGKILL, res.stderr
    up = {k.rsplit("/", 1)[1] for k in _fs().find(f"{BUCKET}/ds3/shards")}
    assert "00002.tokens.bin" in up  # vacuity guard: killed mid-shard, after shards 0 and 1
    assert {"00001.done.json", "00000.done.json"} <= up
    assert "00002.done.json" not in up
    assert not _fs().exists(f"{BUCKET}/ds3/manifest.json")  # vacuity guard: killed midway
    with pytest.raises(UserError, match=r"no manifest\.json"):
        open_dataset(url, cache_dir=tmp_path / "c")
    man = prepare_tokens(TokensConfig(src, url, **KW))  # type: ignore[arg-type]
    assert man["fingerprint"] == local["fingerprint"]
    ds = open_dataset(url, cache_dir=tmp_path / "c")
    assert _same_rows(ds, open_dataset(tmp_path / "local")) > 100
    verify_dataset(url, cache_dir=tmp_path / "c")


def test_processes_share_one_cache(tmp_path: Path, s3: dict[str, str]) -> None:
    url = f"s3://{BUCKET}/ds4"
    os.environ["DDECOMP_CACHE"] = str(tmp_path / "staging")
    try:
        man = prepare_tokens(TokensConfig(_tokens(tmp_path), url, **KW))  # type: ignore[arg-type]
    finally:
        del os.environ["DDECOMP_CACHE"]
    code = (
        "import sys, numpy as np; from ddecomp import open_dataset; "
        "ds = open_dataset(sys.argv[1], cache_dir=sys.argv[2]); "
        "print(ds.fingerprint, sum(int(ds.rows(L, np.arange(ds.num_rows(L))).sum()) "
        "for L in ds.bucket_lengths))"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    procs = [
        subprocess.Popen([sys.executable, "-c", code, url, str(tmp_path / "shared")], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]  # fmt: skip
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e for _, e in outs]
    lines = {o.strip() for o, _ in outs}
    assert len(lines) == 1
    assert lines.pop().split()[0] == man["fingerprint"]
    assert not list((tmp_path / "shared").rglob("*.tmp"))
