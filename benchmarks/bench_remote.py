"""A remote epoch: tokens/s, bytes fetched per token served and cache peak, at 0 and 20 ms.

A synthetic dataset (``--tokens``, uint16, min 256, max 8192) is prepared into moto's S3 server
on 127.0.0.1 (``prepare --out s3://...``: chunk digests written), then read back for one
``VSLLoader`` epoch (65,536 tokens per step, grow-p2) through a small TCP proxy on 127.0.0.1
that delays every chunk of bytes a client sends (each HTTP request) by 0 or 20 ms, with
``cache_limit`` one fifth of the token bytes. The same epoch from the local copy is the
reference (and the rows are compared). Prints tokens/s, bytes fetched per token served (chunk
over-read included) and the disk cache's peak.

Needs the dev extras (moto[server], s3fs). Usage: ``PYTHONPATH=src python
benchmarks/bench_remote.py [--tokens 4000000] [--md OUT.md]``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class DelayProxy:
    """127.0.0.1:port -> upstream; each chunk from the client waits ``delay`` seconds."""

    def __init__(self, upstream: int, delay: float) -> None:
        self.upstream, self.delay = upstream, delay
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = int(self.sock.getsockname()[1])
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream))
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, delayed: bool) -> None:
        try:
            while data := src.recv(1 << 16):
                if delayed and self.delay:
                    time.sleep(self.delay)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.sock.close()


def epoch(ds: object, ref: object | None) -> tuple[float, int]:
    from ddecomp.loading.vsl import VSLLoader

    kw = dict(tokens_per_step=65536, seed=0, world=None)
    loader = VSLLoader(ds, **kw)  # type: ignore[arg-type]
    check = iter(VSLLoader(ref, **kw)) if ref is not None else None  # type: ignore[arg-type]
    t, n = time.perf_counter(), 0
    for b in loader:
        n += b["input_ids"].numel()
        if check is not None:
            assert np.array_equal(b["input_ids"].numpy(), next(check)["input_ids"].numpy())
    return n / (time.perf_counter() - t), n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=4_000_000)
    ap.add_argument("--md")
    ap.add_argument(
        "--memory-bytes",
        type=int,
        default=None,
        help="the reader's in-memory chunk LRU (default ddecomp's 256 MiB; a small one stands in "
        "for a dataset much larger than memory)",
    )
    args = ap.parse_args()
    if args.memory_bytes is not None:
        import ddecomp.data.chunks

        ddecomp.data.chunks.MEMORY_BYTES = args.memory_bytes
    sys.path.insert(0, str(Path(__file__).parent))
    from benchlib import hardware, synth_tokens

    from ddecomp import TokensConfig, open_dataset, prepare_tokens

    port = free_port()
    env = {
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
    }
    os.environ.update(env)  # fmt: skip
    server = Path(sys.executable).parent / "moto_server"
    proc = subprocess.Popen([str(server), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    lines = [f"machine: {hardware()}", ""]
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        import fsspec

        fsspec.filesystem("s3", skip_instance_cache=True).mkdir("bench")
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / "tokens.bin"
            synth_tokens(args.tokens, 2000, 1.2, seed=1).tofile(src)
            kw = dict(eos_id=50256, dtype="uint16", min_len=256, max_len=8192, val_fraction=0.0,
                      quiet=True)  # fmt: skip
            os.environ["DDECOMP_CACHE"] = str(Path(tmp) / "staging")
            t = time.perf_counter()
            prepare_tokens(TokensConfig(src, "s3://bench/ds", **kw))  # type: ignore[arg-type]
            up = time.perf_counter() - t
            prepare_tokens(TokensConfig(src, Path(tmp) / "local", **kw))  # type: ignore[arg-type]
            ref = open_dataset(Path(tmp) / "local")
            tok_bytes = sum(p.stat().st_size for p in (Path(tmp) / "local").rglob("*.tokens.bin"))
            local_tps, _ = epoch(ref, None)
            mem = args.memory_bytes or 256 << 20
            lines += [f"dataset: {args.tokens:,} synthetic tokens ({tok_bytes:,} token bytes), "
                      f"in-memory chunk LRU {mem:,} B, "
                      f"prepared to S3 in {up:.1f} s; local epoch {local_tps / 1e6:.1f}M tokens/s",
                      "", "| latency per request | tokens/s | bytes fetched per token served "
                      "| cache limit | cache peak |", "|---|---|---|---|---|"]  # fmt: skip
            for delay in (0.0, 0.020):
                proxy = DelayProxy(port, delay)
                os.environ["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{proxy.port}"
                limit = tok_bytes // 5
                cache = Path(tmp) / f"cache{delay}"
                ds = open_dataset("s3://bench/ds", cache_dir=cache, cache_limit=limit)
                tps, n = epoch(ds, ref)
                store = ds.remote.store  # type: ignore[union-attr]
                lines.append(
                    f"| {delay * 1000:.0f} ms | {tps / 1e6:.2f}M | "
                    f"{store.fetched_bytes / n:.2f} B | {limit:,} B | {store.peak_disk_bytes:,} B |"
                )
                print(lines[-1], flush=True)
                proxy.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    text = "\n".join(lines)
    print(text)
    if args.md:
        Path(args.md).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
