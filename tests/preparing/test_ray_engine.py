"""The Ray engine against a real Ray cluster on the loopback address, started by the fixture.

The cluster is ``ray start --head --block`` in its own session (so the fixture can stop every
process it started, by process group) with ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, which makes
Ray 2.60 bind 127.0.0.1 instead of the machine's address; the driver joins it by address as a
user's would. The datasets it writes are compared file by file with the local engine's.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ddecomp import PrepareConfig, TokensConfig, UserError, open_dataset, prepare, prepare_tokens
from ddecomp.data.layout import MANIFEST, fingerprint
from tests._fixtures import EOS, SRC, free_port, identity_tokens, random_lengths, run_python
from tests.preparing._ray_faults import ENV as FAULTS_ENV

# Read by Ray when it is imported, in the driver as in the cluster: without it Ray 2.60 turns
# "127.0.0.1" in an address into the machine's network address and connects there.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
ray = pytest.importorskip("ray")

REPO = SRC.parent
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class Cluster:
    def __init__(self, proc: subprocess.Popen[bytes], address: str, faults: Path) -> None:
        self.proc, self.address, self.faults = proc, address, faults

    def pids(self) -> set[int]:
        """Every live process of the cluster: the session ``ray start`` began."""
        out = set()
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                try:
                    if os.getsid(int(d.name)) == self.proc.pid:
                        out.add(int(d.name))
                except OSError:
                    pass
        return out


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    from ray._private import ray_constants

    # Ray was imported before this module set the variable: it would leave the loopback.
    assert not ray_constants.ENABLE_RAY_CLUSTER, "import this module before anything imports ray"
    work = Path(tempfile.mkdtemp(prefix="ddray"))  # short: Ray's socket paths must fit 107 bytes
    faults = work / "faults"
    faults.mkdir()
    port = free_port()
    ray_cli = Path(sys.executable).parent / "ray"
    env = {
        **os.environ,
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # bind 127.0.0.1, not the machine's address
        "RAY_USAGE_STATS_ENABLED": "0",
        "PYTHONPATH": os.pathsep.join([str(SRC), str(REPO)]),
        FAULTS_ENV: str(faults),
    }
    log = open(work / "ray.log", "wb")  # noqa: SIM115 - closed at teardown
    cmd = [str(ray_cli), "start", "--head", "--block", "--port", str(port), "--num-cpus", "2",
           "--include-dashboard=false", "--disable-usage-stats",
           "--temp-dir", str(work / "t")]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while b"Ray runtime started" not in (work / "ray.log").read_bytes():
            assert proc.poll() is None, (work / "ray.log").read_text()
            assert time.monotonic() < deadline, "ray start did not come up in 120 s"
            time.sleep(0.5)
        yield Cluster(proc, f"127.0.0.1:{port}", faults)
    finally:
        if ray.is_initialized():
            ray.shutdown()
        for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue
        os.killpg(proc.pid, signal.SIGKILL) if _group_alive(proc.pid) else None
        log.close()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _text_corpus(root: Path) -> list[str]:
    rng = np.random.default_rng(7)
    words = np.array(["alpha", "beta", "gamma", "delta", "eps", "zeta", "eta", "theta",
                      "kappa", "mu", "the", "of", "and", "a", "run", "prepare"])  # fmt: skip
    paths = []
    for f in range(3):
        p = root / f"part{f}.jsonl"
        with open(p, "w") as fh:
            for _ in range(60):
                n = int(np.exp(rng.uniform(np.log(5), np.log(1500))))
                fh.write(json.dumps({"text": " ".join(rng.choice(words, n))}) + "\n")
        paths.append(str(p))
    return paths


def assert_same_dataset(a: Path, b: Path) -> None:
    """Every file byte for byte; the manifests equal but for the run's elapsed time."""
    fa = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    fb = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert fa == fb
    assert len(fa) > 10  # vacuity guard: several shards with buckets
    for rel in fa:
        if rel.name == MANIFEST:
            ma, mb = (json.loads((d / rel).read_text()) for d in (a, b))
            assert ma["fingerprint"] == mb["fingerprint"] == fingerprint(mb)
            del ma["prepare"]["elapsed_s"], mb["prepare"]["elapsed_s"]
            assert ma == mb
        else:
            assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


def _tcp_sockets(pids: set[int]) -> list[tuple[IPAddress, IPAddress]]:
    """(local, peer) addresses of the TCP sockets the processes ``pids`` hold (from /proc)."""
    inodes: set[str] = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                link = os.readlink(fd)
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
        except OSError:
            pass
    out = []
    for table, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            if cols[9] in inodes:
                out.append((_addr(cols[1], v6), _addr(cols[2], v6)))
    return out


def _addr(hexaddr: str, v6: bool) -> IPAddress:
    ip = bytes.fromhex(hexaddr.split(":")[0])
    if not v6:
        return ipaddress.IPv4Address(ip[::-1])
    # four little-endian 32-bit words; an IPv4 peer on an IPv6 socket is ::ffff:a.b.c.d
    v6addr = ipaddress.IPv6Address(b"".join(ip[i : i + 4][::-1] for i in range(0, 16, 4)))
    return v6addr.ipv4_mapped or v6addr


def _assert_loopback_only(pids: set[int]) -> None:
    socks = _tcp_sockets(pids)
    assert len(socks) > 5, socks  # vacuity guard: the GCS, the raylet and the driver's links
    listening = [loc for loc, peer in socks if peer.is_unspecified]
    for local, peer in socks:
        assert local.is_loopback, (local, peer)
        assert peer.is_loopback or peer.is_unspecified, (local, peer)
    assert listening, socks


def test_text_on_the_cluster_is_the_local_engines_dataset(tmp_path: Path, cluster: Cluster) -> None:
    inputs = _text_corpus(tmp_path)
    kw: dict[str, Any] = dict(inputs=tuple(inputs), vocab_size=400, min_len=16, max_len=256,
                              long_docs="spread", val_fraction=0.2, seed=3, shard_size=60_000,
                              quiet=True)  # fmt: skip
    local = prepare(PrepareConfig(out=tmp_path / "local", workers=1, **kw))
    assert local["totals"]["shards"] >= 4
    assert not ray.is_initialized()
    man = prepare(
        PrepareConfig(out=tmp_path / "ray", engine="ray", ray_address=cluster.address, **kw)
    )
    assert not ray.is_initialized()  # the engine's own connection is closed after the run
    assert man["fingerprint"] == local["fingerprint"]
    assert_same_dataset(tmp_path / "local", tmp_path / "ray")


def test_several_sources_on_the_cluster_are_the_local_engines_dataset(
    tmp_path: Path, cluster: Cluster
) -> None:
    """Issue 21: the shard plan (cut at each input's end, each shard's source and in-place file)
    is made in the driver, so the cluster writes the local engine's dataset."""
    files = []
    for k in range(2):
        files.append(tmp_path / f"part{k}.bin")
        identity_tokens(random_lengths(200, seed=30 + k, hi=3000)).tofile(files[-1])
    inputs = _text_corpus(tmp_path)
    kw: dict[str, Any] = dict(eos_id=EOS, dtype="uint32", min_len=16, max_len=512,
                              shard_size=20_000, in_place=True, source_per_input=True)  # fmt: skip
    local = prepare_tokens(TokensConfig(tuple(files), tmp_path / "local", **kw))
    man = prepare_tokens(
        TokensConfig(
            tuple(files), tmp_path / "ray", engine="ray", ray_address=cluster.address, **kw
        )
    )
    assert man["sources"]["names"] == ["part0.bin", "part1.bin"]
    assert man["fingerprint"] == local["fingerprint"]
    assert_same_dataset(tmp_path / "local", tmp_path / "ray")
    tkw: dict[str, Any] = dict(inputs=tuple(inputs), vocab_size=400, min_len=16, max_len=256,
                               shard_size=60_000, quiet=True, source_per_input=True)  # fmt: skip
    text_local = prepare(PrepareConfig(out=tmp_path / "tl", workers=1, **tkw))
    text_ray = prepare(
        PrepareConfig(out=tmp_path / "tr", engine="ray", ray_address=cluster.address, **tkw)
    )
    assert len(set(text_local["sources"]["shards"])) == len(inputs) > 1
    assert text_ray["fingerprint"] == text_local["fingerprint"]


def test_a_worker_killed_mid_shard_is_retried_to_the_same_dataset(
    tmp_path: Path, cluster: Cluster
) -> None:
    lens = random_lengths(400, seed=11, hi=3000)
    src = tmp_path / "tokens.bin"
    identity_tokens(lens).tofile(src)
    kw: dict[str, Any] = dict(eos_id=EOS, dtype="uint32", min_len=16, max_len=512, val_fraction=0.1,
              shard_size=20_000)  # fmt: skip
    local = prepare_tokens(TokensConfig(src, tmp_path / "local", **kw))
    assert local["totals"]["shards"] >= 6
    (cluster.faults / "armed").write_text("3")
    # A driver already connected is used as is (and left connected): here with the fault hook.
    ray.init(address=cluster.address, runtime_env={
        "worker_process_setup_hook": "tests.preparing._ray_faults.install"})  # fmt: skip
    try:
        man = prepare_tokens(TokensConfig(src, tmp_path / "ray", engine="ray", **kw))
        assert ray.is_initialized()
        _assert_loopback_only(cluster.pids() | {os.getpid()})
    finally:
        ray.shutdown()
    fired = cluster.faults / "fired"
    assert fired.is_file()  # the fault happened
    assert not (cluster.faults / "armed").exists()
    with pytest.raises(ProcessLookupError):
        os.kill(int(fired.read_text()), 0)  # and that worker is gone
    assert man["fingerprint"] == local["fingerprint"]
    assert_same_dataset(tmp_path / "local", tmp_path / "ray")
    ds = open_dataset(tmp_path / "ray")
    assert sum(ds.bucket_rows.values()) > 100


def test_engine_ray_without_ray_installed_is_a_one_line_error(tmp_path: Path) -> None:
    code = f"""
import sys
sys.modules["ray"] = None  # as if Ray were not installed
import numpy as np
from ddecomp import TokensConfig, UserError, prepare_tokens
toks = np.array([5, 6, 7, 1] * 50, dtype=np.uint16)
man = prepare_tokens(TokensConfig(toks, {str(tmp_path / "a")!r}, 1, min_len=1, max_len=2))
print("local ok", man["totals"]["documents"])
try:
    prepare_tokens(TokensConfig(toks, {str(tmp_path / "b")!r}, 1, min_len=1, max_len=2,
                                engine="ray"))
except UserError as e:
    print("refused:", e)
"""
    res = run_python("-c", code)
    assert res.returncode == 0, res.stderr
    assert "local ok 50" in res.stdout
    assert "refused: --engine ray needs Ray: pip install 'ddecomp[ray]'" in res.stdout


def test_engine_and_address_are_checked() -> None:
    with pytest.raises(UserError, match="--engine 'spark' is not one of local, ray"):
        TokensConfig(np.zeros(3, np.uint16), Path("x"), 0, engine="spark")
    with pytest.raises(UserError, match="--ray-address applies only to --engine ray"):
        TokensConfig(np.zeros(3, np.uint16), Path("x"), 0, ray_address="127.0.0.1:1")


def test_a_driver_killed_midway_resumes_on_rerun(tmp_path: Path, cluster: Cluster) -> None:
    lens = random_lengths(400, seed=13, hi=3000)
    src = tmp_path / "tokens.bin"
    identity_tokens(lens).tofile(src)
    kw: dict[str, Any] = dict(eos_id=EOS, dtype="uint32", min_len=16, max_len=512,
                              shard_size=20_000)  # fmt: skip
    local = prepare_tokens(TokensConfig(src, tmp_path / "local", **kw))
    out = tmp_path / "ray"
    # The driver, in its own process, kills itself (SIGKILL) once it has 3 shards' records.
    code = f"""
import os, signal
from ddecomp import TokensConfig, prepare_tokens
from ddecomp.preparing.progress import Progress
update = Progress.update
def killing(self, *a, **k):
    update(self, *a, **k)
    if self.shards == 3:
        os.kill(os.getpid(), signal.SIGKILL)
Progress.update = killing
prepare_tokens(TokensConfig({str(src)!r}, {str(out)!r}, engine="ray",
                            ray_address={cluster.address!r}, **{kw!r}))
"""
    res = run_python("-c", code, env={"PYTHONPATH": os.pathsep.join([str(SRC), str(REPO)])})
    assert res.returncode == -signal.SIGKILL, res.stderr
    assert not (out / MANIFEST).exists()
    kept = {p.name: p.stat().st_mtime_ns for p in (out / "shards").glob("*.done.json")}
    assert len(kept) >= 3  # vacuity guard: records were written before the kill
    assert len(kept) < local["totals"]["shards"]
    man = prepare_tokens(TokensConfig(src, out, engine="ray", ray_address=cluster.address, **kw))
    assert {n: (out / "shards" / n).stat().st_mtime_ns for n in kept} == kept  # not redone
    assert man["fingerprint"] == local["fingerprint"]
    assert_same_dataset(tmp_path / "local", out)
