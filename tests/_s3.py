"""A real S3-compatible server for the object-storage tests: moto's standalone server, started
on 127.0.0.1 by the module-scoped fixture :func:`s3_server` and stopped after (import it into a
test module as ``s3 = s3_server``)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests._fixtures import free_port

fsspec = pytest.importorskip("fsspec")
s3fs = pytest.importorskip("s3fs")
pytest.importorskip("moto")

BUCKET = "ddecomp-test"


@pytest.fixture(scope="module")
def s3_server() -> Iterator[dict[str, str]]:
    port = free_port()
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}  # fmt: skip
    server = Path(sys.executable).parent / "moto_server"
    proc = subprocess.Popen([str(server), "-H", "127.0.0.1", "-p", str(port)],
                            env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    # fsspec caches filesystems by their arguments, not by the environment: one cached from an
    # earlier module's server (another port) would be reused here and connect to a dead port
    s3fs.S3FileSystem.clear_instance_cache()
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None, "moto_server exited"
                assert time.monotonic() < deadline, "moto_server did not listen in 60 s"
                time.sleep(0.2)
        fsspec.filesystem("s3", skip_instance_cache=True).mkdir(BUCKET)
        yield env
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        s3fs.S3FileSystem.clear_instance_cache()
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def s3_fs() -> Any:
    """A fresh s3fs filesystem (no instance cache: the environment may have changed)."""
    return fsspec.filesystem("s3", skip_instance_cache=True)
