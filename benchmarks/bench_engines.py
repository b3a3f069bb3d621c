"""Issue 13's numbers: the Ray engine's overhead, ``--in-place`` vs a copy, reading through S3.

Three measurements, each in fresh processes (peak RSS is the child's ``ru_maxrss``):

1. ``engines``: text prepare of the default corpus (the Python standard library's sources; the
   Debian benchmark corpus needs ``benchmarks/corpus.py`` first) with one tokenizer trained
   beforehand: the local engine (2 worker processes) vs a local Ray cluster of 2 CPUs (``ray
   start --head --num-cpus 2`` on 127.0.0.1, started and stopped here). Same dataset, checked.
2. ``inplace``: ``--from-tokens`` of a synthetic flat uint16 file (log-normal documents, mean
   ~600 tokens): copied vs ``--in-place``: tokens/s, peak RSS, bytes written.
3. ``s3``: a prepared dataset on a local ``moto_server`` (127.0.0.1): ``open_dataset(URL)`` with a
   cold cache (fetch + sha256), then warm, and one epoch of rows (every row of every bucket) vs
   the same dataset from a local directory.

Usage: ``python benchmarks/bench_engines.py [--parts engines,inplace,s3] [--tokens 2e9]``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
       "RAY_USAGE_STATS_ENABLED": "0"}  # fmt: skip


# The child reports its peak RSS two ways: ru_maxrss counts the pages of memory-mapped files it
# touched (page cache, reclaimable: a 4 GB token file read through np.memmap shows as 4 GB),
# so a thread also samples RssAnon (heap and arrays only) every 20 ms and keeps the largest.
PRELUDE = """
import json, resource, threading, time
_anon = [0]
def _sample():
    while True:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    _anon[0] = max(_anon[0], int(line.split()[1]))
        time.sleep(0.02)
threading.Thread(target=_sample, daemon=True).start()
def emit(d):
    rss = [resource.getrusage(w).ru_maxrss for w in (resource.RUSAGE_SELF,
                                                     resource.RUSAGE_CHILDREN)]
    d["peak_rss_mb"], d["peak_rss_workers_mb"] = (round(r / 1024, 1) for r in rss)
    d["peak_anon_rss_mb"] = round(_anon[0] / 1024, 1)
    print(json.dumps(d))
"""


def child(code: str, env: dict[str, str] | None = None, *args: str) -> dict[str, Any]:
    """Run ``code`` in a fresh interpreter; it calls ``emit(dict)`` once (peak RSS added)."""
    res = subprocess.run([sys.executable, "-c", PRELUDE + code, *args], env=env or ENV,
                         capture_output=True, text=True, check=False)  # fmt: skip
    if res.returncode:
        raise SystemExit(res.stderr)
    out: dict[str, Any] = json.loads(res.stdout.strip().splitlines()[-1])
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def bench_engines(tmp: Path) -> dict[str, Any]:
    tok = tmp / "tok.json"
    child(f"""
import json
from ddecomp.preparing.inputs import default_corpus_files
from ddecomp.preparing.ingest import IngestStats, iter_documents
from ddecomp.preparing.tokenize import save_tokenizer, train_bpe
files = default_corpus_files()
save_tokenizer(train_bpe(iter_documents(files, "text", False, IngestStats(), False), 8192),
               {str(tok)!r})
emit({{}})
""")
    port, work = free_port(), Path(tempfile.mkdtemp(prefix="ddb"))
    ray = subprocess.Popen([str(Path(sys.executable).parent / "ray"), "start", "--head", "--block",
                            "--port", str(port), "--num-cpus", "2", "--include-dashboard=false",
                            "--temp-dir", str(work)], env=ENV, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        time.sleep(15)  # the head's processes come up
        runs = {}
        for engine in ("local", "ray"):
            extra = f", engine='ray', ray_address='127.0.0.1:{port}'" if engine == "ray" else ""
            runs[engine] = child(f"""
import json, time
from ddecomp import PrepareConfig, prepare
t = time.perf_counter()
man = prepare(PrepareConfig(out={str(tmp / engine)!r}, tokenizer={str(tok)!r}, workers=2,
                            quiet=True{extra}))
dt = time.perf_counter() - t
emit(({{"s": round(dt, 2), "tokens": man["totals"]["tokens"],
                  "tokens_per_s": round(man["totals"]["tokens"] / dt),
                  "shards": man["totals"]["shards"], "fingerprint": man["fingerprint"]}}))
""")
    finally:
        os.killpg(ray.pid, signal.SIGTERM)
        ray.wait(timeout=60)
        shutil.rmtree(work, ignore_errors=True)
    assert runs["local"]["fingerprint"] == runs["ray"]["fingerprint"]
    runs["ray_over_local_time"] = round(runs["ray"]["s"] / runs["local"]["s"], 3)
    return runs


def bench_inplace(tmp: Path, n_tokens: int) -> dict[str, Any]:
    src = tmp / "synthetic.u16"
    child(f"""
import json, numpy as np
rng = np.random.default_rng(0)
n, out, pos = {n_tokens}, open({str(src)!r}, "wb"), 0
while pos < n:
    k = min(1 << 26, n - pos)
    toks = rng.integers(0, 50000, size=k, dtype=np.uint16)
    ends = np.cumsum(rng.lognormal(6.0, 1.0, size=k // 100 + 10).astype(np.int64) + 1)
    toks[ends[ends < k] - 1] = 50256
    toks[-1] = 50256
    toks.tofile(out); pos += k
out.close()
emit({{}})
""")
    runs: dict[str, Any] = {}
    for mode in ("copy", "in_place"):
        out = tmp / mode
        runs[mode] = child(f"""
import json, time
from ddecomp import TokensConfig, prepare_tokens
t = time.perf_counter()
man = prepare_tokens(TokensConfig({str(src)!r}, {str(out)!r}, 50256, dtype="uint16",
                                  in_place={mode == "in_place"}))
dt = time.perf_counter() - t
emit(({{"s": round(dt, 2), "tokens_per_s": round(man["totals"]["tokens"] / dt),
                  "shards": man["totals"]["shards"]}}))
""")
        runs[mode]["written_mb"] = round(du(out) / 2**20, 1)
        shutil.rmtree(out)
    src_mb = round(src.stat().st_size / 2**20, 1)
    src.unlink()
    return {**runs, "input_mb": src_mb}


def bench_s3(tmp: Path, n_tokens: int) -> dict[str, Any]:
    port = free_port()
    env = {**ENV, "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
           "DDECOMP_CACHE": str(tmp / "cache")}  # fmt: skip
    moto = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1",
                             "-p", str(port)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        time.sleep(5)
        setup = f"""
import json, numpy as np, fsspec
from ddecomp import TokensConfig, prepare_tokens
rng = np.random.default_rng(0)
toks = rng.integers(0, 50000, size={n_tokens}, dtype=np.uint16)
ends = np.cumsum(rng.lognormal(6.0, 1.0, size={n_tokens} // 100).astype(np.int64) + 1)
toks[ends[ends < toks.size] - 1] = 50256
toks[-1] = 50256
toks.tofile({str(tmp / "s.u16")!r})
fsspec.filesystem("s3").mkdir("bench")
for out in ({str(tmp / "local")!r}, "s3://bench/ds"):
    prepare_tokens(TokensConfig({str(tmp / "s.u16")!r}, out, 50256, dtype="uint16"))
emit({{}})
"""
        child(setup, env)
        read = """
import json, sys, time, numpy as np
from ddecomp import open_dataset
t = time.perf_counter()
ds = open_dataset(sys.argv[1] if len(sys.argv) > 1 else "{root}", cache_dir="{cache}")
t_open = time.perf_counter() - t
t = time.perf_counter(); n = 0
for L in ds.bucket_lengths:
    idx = np.random.default_rng(0).permutation(ds.num_rows(L))
    for i in range(0, idx.size, 64):
        n += ds.rows(L, idx[i:i + 64]).size
t_read = time.perf_counter() - t
emit(({{"open_s": round(t_open, 3), "epoch_s": round(t_read, 3),
                  "tokens_per_s": round(n / t_read)}}))
"""
        cache = tmp / "readcache"
        out = {
            "local_dir": child(read.format(root=tmp / "local", cache=cache), env),
            "s3_cold_cache": child(read.format(root="s3://bench/ds", cache=cache), env),
            "s3_warm_cache": child(read.format(root="s3://bench/ds", cache=cache), env),
            "dataset_mb": round(du(tmp / "local") / 2**20, 1),
        }
    finally:
        os.killpg(moto.pid, signal.SIGTERM)
        moto.wait(timeout=30)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--parts", default="engines,inplace,s3")
    ap.add_argument("--tokens", type=float, default=2e9, help="synthetic tokens for inplace")
    ap.add_argument("--s3-tokens", type=float, default=5e7, help="tokens of the s3 dataset")
    ap.add_argument("--tmp", default="/tmp/ddecomp_bench_engines")
    ap.add_argument("--out", default=None, help="JSON result (default: results/, dated)")
    args = ap.parse_args()
    tmp = Path(args.tmp)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    res: dict[str, Any] = {"date": datetime.date.today().isoformat(), "cpus": os.cpu_count()}
    for part in args.parts.split(","):
        (tmp / part).mkdir()
        if part == "engines":
            res[part] = bench_engines(tmp / part)
        elif part == "inplace":
            res[part] = bench_inplace(tmp / part, int(args.tokens))
        elif part == "s3":
            res[part] = bench_s3(tmp / part, int(args.s3_tokens))
        print(json.dumps({part: res[part]}), flush=True)
    out = Path(args.out or ROOT / f"benchmarks/results/engines_cpu-2core_{res['date']}.json")
    out.write_text(json.dumps(res, indent=1) + "\n")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
