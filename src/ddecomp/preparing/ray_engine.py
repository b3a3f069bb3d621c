"""The Ray engine: every shard job is one Ray task on an existing cluster (and
:func:`make_runner`, the choice between it and the local process pool).

The driver (the ``prepare`` process) plans shards exactly as the local engine does, submits each
job as a task (:func:`~ddecomp.preparing.pool.run_job`: tokenize or read the token range, index,
write the shard's files and its ``done.json``) and writes the manifest last from the records the
tasks return. Why the result is the same dataset as the local engine's, whatever the cluster:

- a shard's bytes depend only on its job (the documents or token range, the tokenizer, the
  index parameters): not on the node, the task's start time or how many tasks run;
- every file is written atomically (temporary name + rename), so a task killed midway leaves
  at most a temporary file; Ray retries a task whose worker died (``max_retries``) and the retry
  rewrites the same bytes. The driver removes such temporaries before the manifest;
- an exception raised by the job itself (bad input) is not retried and reaches the driver as
  that exception (Ray re-raises a task's error as an instance of its class).

Where it runs: ``ray.init(address=...)`` joins the cluster at ``--ray-address`` (``None``: the
``RAY_ADDRESS`` variable, a cluster on this machine, or else a new local one); a driver already
connected (a notebook) is reused and left connected. Every node must have ddecomp installed
and see ``--from-tokens`` at the same path; ``--out`` is a shared filesystem path or a URL
(object storage: each task uploads its own shard, :mod:`ddecomp.preparing.remote_out`, with
the node's credentials). The driver must import Ray with ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``
set when the cluster listens on 127.0.0.1 only: Ray otherwise turns ``127.0.0.1`` in an address
into the machine's network address.
At most ``2 x`` the cluster's CPUs tasks are in flight, which bounds the text the driver holds.
Tasks use one CPU each and keep HF tokenizers single-threaded, as the local pool does.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
from pathlib import Path
from types import TracebackType
from typing import Any

from ddecomp.errors import UserError
from ddecomp.preparing.pool import Runner, ShardRunner, TextJob, TokenJob, run_job

log = logging.getLogger("ddecomp.preparing.ray_engine")

PROBE_TIMEOUT_S = 5.0  # a cluster's head answers a TCP connection at once
TASK_RETRIES = 4  # a task whose worker process or node died is run again, up to this many times
_TASK_ENV = {"RAYON_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UserError(
            "--engine ray needs Ray: pip install 'ddecomp[ray]' (on the driver and every node)"
        ) from None
    return ray


def _absolute(job: TextJob | TokenJob) -> TextJob | TokenJob:
    """Paths as every node sees them: a task's working directory is not the driver's."""
    job = dataclasses.replace(job, root=Path(job.root).resolve())
    if isinstance(job, TokenJob) and isinstance(job.source, Path):
        job = dataclasses.replace(job, source=job.source.resolve())
    return job


class RayRunner:
    """Runs shard jobs as Ray tasks; the same interface as :class:`~.pool.ShardRunner`."""

    def __init__(self, address: str | None) -> None:
        self._ray = ray = _import_ray()
        self._owns_connection = not ray.is_initialized()
        if self._owns_connection:
            try:
                ray.init(
                    address=address,
                    runtime_env={"env_vars": _TASK_ENV},
                    logging_level=logging.WARNING,
                    log_to_driver=True,
                )
            except ConnectionError as e:
                raise UserError(
                    f"--ray-address {address}: cannot connect to a Ray cluster ({e}); start it "
                    "with `ray start --head` or check the address"
                ) from e
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.max_in_flight = max(2, 2 * cpus)
        self._task = ray.remote(num_cpus=1, max_retries=TASK_RETRIES)(run_job)
        self._pending: list[Any] = []
        log.info(
            "ray engine: %d CPUs in the cluster, up to %d tasks in flight", cpus, self.max_in_flight
        )

    def _collect(self, wait_for: int) -> list[dict[str, Any]]:
        """Records of finished tasks: every ready one, and at least ``wait_for``."""
        ray = self._ray
        if not self._pending:
            return []
        ready, self._pending = ray.wait(
            self._pending, num_returns=len(self._pending), timeout=0, fetch_local=False
        )
        if len(ready) < wait_for:
            more, self._pending = ray.wait(self._pending, num_returns=wait_for - len(ready))
            ready += more
        return list(ray.get(ready))

    def submit(self, job: TextJob | TokenJob) -> list[dict[str, Any]]:
        self._pending.append(self._task.remote(_absolute(job)))
        return self._collect(max(0, len(self._pending) - self.max_in_flight + 1))

    def drain(self) -> list[dict[str, Any]]:
        return self._collect(len(self._pending))

    def __enter__(self) -> RayRunner:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        ray = self._ray
        if exc_type is not None:
            for ref in self._pending:  # a failed run stops its remaining tasks
                ray.cancel(ref, force=True)
        self._pending = []
        if self._owns_connection:
            ray.shutdown()


def probe_cluster(engine: str, address: str | None) -> None:
    """Before any work (training a tokenizer, writing ``.prepare.json``): with ``--engine ray``,
    Ray must import and a ``host:port`` address (``--ray-address`` or ``RAY_ADDRESS``) must
    accept a TCP connection within :data:`PROBE_TIMEOUT_S`; ``ray.init`` would otherwise retry
    a wrong address for minutes. ``auto``, ``local`` and no address are left to ``ray.init``."""
    if engine != "ray":
        return
    _import_ray()
    addr = address or os.environ.get("RAY_ADDRESS") or ""
    host, sep, port = addr.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_TIMEOUT_S).close()
    except OSError as e:
        raise UserError(
            f"--ray-address {addr}: no Ray cluster answers there ({e.strerror or e}); start it "
            "with `ray start --head` or check the address"
        ) from None


def make_runner(engine: str, workers: int, ray_address: str | None = None) -> Runner:
    """The engine's runner: ``local`` (a pool of ``workers``) or ``ray`` (the cluster's CPUs)."""
    if engine == "ray":
        return RayRunner(ray_address)
    assert engine == "local", engine
    return ShardRunner(workers)
