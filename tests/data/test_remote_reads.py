"""Remote datasets read on demand (ddecomp.data.chunks, remote_tokens): a dataset five times the
cache trains a whole epoch within it, rows equal to the local copy's; no disk cache at 0; a
killed reader restarts; ``plan URL`` reads the manifest alone. Through moto on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import ddecomp
from ddecomp import DataError, TokensConfig, open_dataset, prepare_tokens
from ddecomp.cli import main
from ddecomp.loading.vsl import VSLLoader
from tests._fixtures import EOS, SRC, identity_tokens, random_lengths
from tests._s3 import BUCKET, s3_fs, s3_server  # skips the module without fsspec, s3fs, moto

s3 = s3_server
KW: dict[str, Any] = dict(eos_id=EOS, dtype="uint32", min_len=16, max_len=256, val_fraction=0.1,
          shard_size=60_000)  # fmt: skip


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory, s3: dict[str, str]) -> tuple[str, Path]:
    """One dataset (~1.6 MB of tokens, several shards) prepared locally and to S3."""
    tmp = tmp_path_factory.mktemp("remote")
    src = tmp / "tokens.bin"
    identity_tokens(random_lengths(400, seed=7, hi=2000)).tofile(src)
    os.environ["DDECOMP_CACHE"] = str(tmp / "staging")
    try:
        url = f"s3://{BUCKET}/reads"
        prepare_tokens(TokensConfig(src, url, **KW))  # type: ignore[arg-type]
    finally:
        del os.environ["DDECOMP_CACHE"]
    prepare_tokens(TokensConfig(src, tmp / "local", **KW))
    return url, tmp / "local"


def _token_bytes(local: Path) -> int:
    return sum(p.stat().st_size for p in (local / "shards").glob("*.tokens.bin"))


def _disk(cache: Path) -> int:
    return sum(p.stat().st_size for p in cache.rglob("*.chunk"))


def test_a_dataset_five_times_the_cache_trains_an_epoch_within_it(
    remote: tuple[str, Path], tmp_path: Path
) -> None:
    url, local = remote
    limit = _token_bytes(local) // 5
    ds = open_dataset(url, cache_dir=tmp_path / "c", cache_limit=limit)
    assert ds.remote is not None
    ref = open_dataset(local)
    kw: dict[str, Any] = dict(tokens_per_step=1024, seed=3, world=None)
    got, want = VSLLoader(ds, **kw), VSLLoader(ref, **kw)
    steps, peak = 0, 0
    for a, b in zip(got, want, strict=True):
        assert torch.equal(a["input_ids"], b["input_ids"])
        assert torch.equal(a["labels"], b["labels"])
        peak = max(peak, _disk(tmp_path / "c"))
        steps += 1
    assert steps == len(want) > 40  # vacuity: a whole epoch of many steps was compared
    assert 0 < peak <= limit
    assert ds.remote.store.peak_disk_bytes <= limit
    # every token row was served, but the bytes fetched stay within a small factor of them
    assert ds.remote.store.fetched_bytes >= limit


def test_no_disk_cache_at_zero_and_documents_read_remotely(
    remote: tuple[str, Path], tmp_path: Path
) -> None:
    url, local = remote
    ds = open_dataset(url, cache_dir=tmp_path / "c", cache_limit=0)
    ref = open_dataset(local)
    for L in ds.bucket_lengths:
        idx = np.arange(ds.num_rows(L))[::7]
        np.testing.assert_array_equal(ds.rows(L, idx), ref.rows(L, idx))
    docs = list(zip(ds.documents(), ref.documents(), strict=True))
    assert len(docs) > 100
    assert all(np.array_equal(a, b) for a, b in docs[:50])
    assert not list((tmp_path / "c").rglob("*.chunk"))
    assert ds.remote is not None
    assert ds.remote.store.fetched_bytes > 0


def test_a_killed_reader_restarts(remote: tuple[str, Path], tmp_path: Path) -> None:
    url, local = remote
    limit = _token_bytes(local) // 4
    code = f"""
import os, signal, sys, numpy as np
from ddecomp import open_dataset
ds = open_dataset({url!r}, cache_dir={str(tmp_path / "c")!r}, cache_limit={limit})
total = 0
for i, L in enumerate(ds.bucket_lengths):
    total += int(ds.rows(L, np.arange(ds.num_rows(L))).sum())
    if sys.argv[1] == "kill" and i == 2:
        os.kill(os.getpid(), signal.SIGKILL)
print(total)
"""
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    run = [sys.executable, "-c", code]
    killed = subprocess.run([*run, "kill"], env=env, capture_output=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert 0 < _disk(tmp_path / "c") <= limit  # vacuity: killed with chunks in the cache
    res = subprocess.run([*run, "full"], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    ref = open_dataset(local)
    want = sum(int(ref.rows(L, np.arange(ref.num_rows(L))).sum()) for L in ref.bucket_lengths)
    assert int(res.stdout) == want
    assert _disk(tmp_path / "c") <= limit
    assert not list((tmp_path / "c").rglob("*.tmp"))


def test_plan_of_a_url_reads_the_manifest_alone(
    remote: tuple[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, local = remote
    os.environ["DDECOMP_CACHE"] = str(tmp_path / "c")
    try:
        assert main(["plan", url, "--tokens-per-step", "4096", "--tokens", "10000000"]) == 0
        remote_out = capsys.readouterr().out
        assert main(["plan", str(local), "--tokens-per-step", "4096", "--tokens", "10000000"]) == 0
        local_out = capsys.readouterr().out
    finally:
        del os.environ["DDECOMP_CACHE"]
    assert "2,441 steps" in remote_out
    assert remote_out.splitlines()[1:] == local_out.splitlines()[1:]  # all but the name
    assert not (tmp_path / "c").exists()  # nothing fetched but the manifest (not cached)


def test_loader_workers_read_a_remote_dataset(remote: tuple[str, Path], tmp_path: Path) -> None:
    """Worker processes (forked) read on demand too, with the same rows as the local copy."""
    url, local = remote
    ds = open_dataset(url, cache_dir=tmp_path / "c", cache_limit=1 << 20)
    kw: dict[str, Any] = dict(tokens_per_step=1024, seed=4)
    got = VSLLoader(ds, world=ddecomp.World(num_workers=2), **kw)
    want = VSLLoader(open_dataset(local), world=None, **kw)
    n = 0
    for a, b in zip(got, want, strict=True):
        assert torch.equal(a["input_ids"], b["input_ids"])
        n += 1
    assert n == len(want) > 40


def test_stats_of_a_url_reads_no_token(
    remote: tuple[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, local = remote
    os.environ["DDECOMP_CACHE"] = str(tmp_path / "c")
    try:
        assert main(["stats", url, "--json"]) == 0
    finally:
        del os.environ["DDECOMP_CACHE"]
    got = json.loads(capsys.readouterr().out)
    assert main(["stats", str(local), "--json"]) == 0
    want = json.loads(capsys.readouterr().out)
    assert got["buckets"] == want["buckets"]
    assert got["num_tokens"] == want["num_tokens"] > 0
    assert list((tmp_path / "c").rglob("*.npy"))  # the index files were fetched
    assert not list((tmp_path / "c").rglob("*.chunk"))  # and no token byte


def test_a_copied_dataset_without_chunk_digests_is_checked_per_shard(
    remote: tuple[str, Path], tmp_path: Path
) -> None:
    """A local dataset copied into storage (no chunk digests): each shard is read whole and
    checked against its sha256; a changed one is refused."""
    _, local = remote
    fs = s3_fs()
    fs.put(str(local), f"{BUCKET}/copied", recursive=True)
    url = f"s3://{BUCKET}/copied"
    ds = open_dataset(url, cache_dir=tmp_path / "c", cache_limit=0)
    ref = open_dataset(local)
    for L in ds.bucket_lengths:
        idx = np.arange(ds.num_rows(L))
        np.testing.assert_array_equal(ds.rows(L, idx), ref.rows(L, idx))
    assert ds.remote is not None
    assert ds.remote.store.fetched_bytes == _token_bytes(local)  # each shard once, whole
    key = f"{BUCKET}/copied/shards/00000.tokens.bin"
    data = bytearray(fs.cat_file(key))
    data[-1] ^= 1
    fs.pipe_file(key, bytes(data))
    again = open_dataset(url, cache_dir=tmp_path / "c2", cache_limit=0)
    with pytest.raises(DataError, match=r"copied/shards/00000.tokens.bin: bytes \[0, "):
        _read_every_row(again)


def _read_every_row(ds: Any) -> None:
    for L in ds.bucket_lengths:
        ds.rows(L, np.arange(ds.num_rows(L)))


def test_the_cache_limit_from_the_environment_bounds_the_disk_cache(
    remote: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``$DDECOMP_CACHE_LIMIT`` bounds the chunk cache where no keyword can (the CLI, adapters):
    192K (binary units, three chunks) is honoured; an explicit ``cache_limit`` wins; nonsense is
    one line naming the variable."""
    url, _local = remote
    limit_k = 192  # KiB: three 64 KiB chunks, a fraction of what an epoch reads
    monkeypatch.setenv("DDECOMP_CACHE_LIMIT", f"{limit_k}K")
    ds = open_dataset(url, cache_dir=tmp_path / "c")
    assert ds.remote is not None
    assert ds.remote.store.limit == limit_k * 1024
    for L in ds.bucket_lengths:
        ds.rows(L, np.arange(ds.num_rows(L)))
    assert ds.remote.store.fetched_bytes > limit_k * 1024  # vacuity: more read than it keeps
    assert 0 < _disk(tmp_path / "c") <= limit_k * 1024
    explicit = open_dataset(url, cache_dir=tmp_path / "c2", cache_limit=0)
    assert explicit.remote is not None
    assert explicit.remote.store.limit == 0
    monkeypatch.setenv("DDECOMP_CACHE_LIMIT", "lots")
    with pytest.raises(ddecomp.UserError, match=r"^\$DDECOMP_CACHE_LIMIT='lots' is not a byte"):
        open_dataset(url, cache_dir=tmp_path / "c3")
