"""A fault for the Ray engine's tests, installed in each Ray worker (``worker_process_setup_hook``).

When the directory named by ``DDECOMP_TEST_RAY_FAULTS`` holds a file ``armed`` naming a shard
index, the first worker that writes that shard's ``done.json`` takes the file (an atomic rename
to ``fired``, so exactly one worker does), writes its pid into it, starts the real atomic write
of the record and kills itself with SIGKILL halfway: the shard's other files are written, its
record is a temporary file, and Ray sees a worker that died mid-task.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

ENV = "DDECOMP_TEST_RAY_FAULTS"


def install() -> None:
    where = os.environ.get(ENV)
    if not where:
        return
    from ddecomp.io import atomic_file
    from ddecomp.preparing import shards

    real = shards.write_json_atomic

    def write_json_atomic(path: Path, obj: Any) -> None:
        armed, fired = Path(where) / "armed", Path(where) / "fired"
        ours = path.name.endswith(".done.json") and armed.is_file()
        if ours and int(armed.read_text()) == obj["index"]:
            try:
                os.rename(armed, fired)
            except FileNotFoundError:  # another worker took it
                return real(path, obj)
            fired.write_text(str(os.getpid()))
            with atomic_file(path) as f:
                f.write(b'{"index": ')
                f.flush()
                os.kill(os.getpid(), signal.SIGKILL)
        return real(path, obj)

    shards.write_json_atomic = write_json_atomic
