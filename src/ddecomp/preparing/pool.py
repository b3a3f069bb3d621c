"""Shard jobs and the process pool that runs them.

A job is a small picklable value; :func:`run_job` does the whole shard in the worker (tokenize or
read the token range, index, write) and returns the shard's record, so the main process only
reads inputs and collects records. Workers are forked where the platform can (no re-import, and
no ``if __name__ == "__main__"`` guard needed in users' scripts; HF tokenizers detects the fork
and keeps the children single-threaded), spawned elsewhere; one process per core. At most
``2 * workers`` jobs are in flight, which bounds the text held in memory to that many shards.

The pipeline picks the engine: this pool (``local``, the default) or Ray tasks
(:mod:`ddecomp.preparing.ray_engine`, imported only when asked for: Ray is an optional extra);
both are a :class:`Runner`, take the same jobs and return the same records.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
from collections import deque
from dataclasses import dataclass
from multiprocessing.pool import AsyncResult, Pool
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import numpy as np

from ddecomp.preparing.shards import IndexParams, document_fences, with_eos, write_shard

_TOKENIZERS: dict[str, Any] = {}  # per-process cache: tokenizer sha256 -> Tokenizer


@dataclass(frozen=True)
class TextJob:
    root: Path
    index: int
    texts: list[str]
    tokenizer_json: str
    tokenizer_sha: str
    eos_id: int
    bos_id: int | None
    dtype: str
    params: IndexParams
    remote: str | None = None  # --out URL: the job uploads its shard there (remote_out)


@dataclass(frozen=True)
class TokenJob:
    """A range ``[start, end)`` of a flat token source: a file (raw or .npy) or an array."""

    root: Path
    index: int
    source: Path | np.ndarray
    src_dtype: str
    header_bytes: int
    start: int
    end: int
    dtype: str
    eos_id: int
    params: IndexParams
    remote: str | None = None
    in_place: bool = False  # index the source file where it is; write no token file
    # Documents given by an index (Megatron's .idx), not by EOS: fenceposts in [0, end - start];
    # copied, EOS is appended to each that does not end with it (shards.with_eos).
    fence: np.ndarray | None = None
    # In place with several files: this range's file, its index in the manifest's tokens_files.
    in_place_file: int | None = None


def _tokenizer(job: TextJob) -> Any:
    tok = _TOKENIZERS.get(job.tokenizer_sha)
    if tok is None:
        from tokenizers import Tokenizer

        tok = _TOKENIZERS[job.tokenizer_sha] = Tokenizer.from_str(job.tokenizer_json)
    return tok


def _token_slice(job: TokenJob) -> np.ndarray:
    if isinstance(job.source, np.ndarray):
        return job.source[job.start : job.end]
    n = job.end - job.start
    return np.memmap(
        job.source,
        dtype=np.dtype(job.src_dtype),
        mode="r",
        offset=job.header_bytes + job.start * np.dtype(job.src_dtype).itemsize,
        shape=(n,),
    )


def run_job(job: TextJob | TokenJob) -> dict[str, Any]:
    """Write the job's shard (and upload it when ``--out`` is a URL); return its record."""
    rec = _write_job(job)
    if job.remote is not None:
        from ddecomp.preparing.remote_out import RemoteOut

        RemoteOut(job.remote).upload_shard(job.root, rec)
    return rec


def _write_job(job: TextJob | TokenJob) -> dict[str, Any]:
    if isinstance(job, TextJob):
        from ddecomp.preparing.tokenize import encode_documents

        tokens, lengths = encode_documents(
            _tokenizer(job), job.texts, job.eos_id, job.bos_id, np.dtype(job.dtype)
        )
        fence = np.zeros(lengths.size + 1, dtype=np.int64)
        np.cumsum(lengths, out=fence[1:])
        return write_shard(job.root, job.index, tokens, fence, job.params)
    src = _token_slice(job)
    tokens = src if src.dtype == np.dtype(job.dtype) else src.astype(job.dtype)
    if job.fence is None:
        fence, trailing = document_fences(tokens, job.eos_id)
    elif job.in_place:
        fence, trailing = job.fence, 0
    else:
        tokens, fence = with_eos(tokens, job.fence, job.eos_id)
        trailing = 0
    offset = None
    if job.in_place:
        assert isinstance(job.source, Path), "in place: a file"
        assert tokens is src, "in place: the file's own dtype"
        offset = job.header_bytes + job.start * tokens.dtype.itemsize
    return write_shard(
        job.root,
        job.index,
        tokens,
        fence,
        job.params,
        extra={"no_final_eos": int(trailing > 0)},
        in_place_offset=offset,
        in_place_file=job.in_place_file,
    )


def _init_worker() -> None:
    # Ctrl-C reaches the whole process group: only the main process handles it (it terminates
    # the pool), so no worker prints a KeyboardInterrupt traceback or dies holding a pipe.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # One tokenizer thread per process: the pool already has one process per core.
    os.environ["RAYON_NUM_THREADS"] = "1"
    os.environ["TOKENIZERS_PARALLELISM"] = "false"


class ShardRunner:
    """Runs jobs inline (``workers == 1``) or in a spawned pool, returning finished records."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pool: Pool | None = None
        self._pending: deque[AsyncResult[dict[str, Any]]] = deque()

    def submit(self, job: TextJob | TokenJob) -> list[dict[str, Any]]:
        if self.workers == 1:
            return [run_job(job)]
        if self._pool is None:
            method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
            # HF tokenizers checks this variable in the forked child: set, it keeps the child
            # single-threaded without its "forked after parallelism" warning. Restored after.
            old = os.environ.get("TOKENIZERS_PARALLELISM")
            os.environ["TOKENIZERS_PARALLELISM"] = "false"
            try:
                self._pool = mp.get_context(method).Pool(self.workers, initializer=_init_worker)
            finally:
                if old is None:
                    del os.environ["TOKENIZERS_PARALLELISM"]
                else:
                    os.environ["TOKENIZERS_PARALLELISM"] = old
        self._pending.append(self._pool.apply_async(run_job, (job,)))
        done = []
        while len(self._pending) >= 2 * self.workers or (
            self._pending and self._pending[0].ready()
        ):
            done.append(self._pending.popleft().get())
        return done

    def drain(self) -> list[dict[str, Any]]:
        done = [r.get() for r in self._pending]
        self._pending.clear()
        return done

    def __enter__(self) -> ShardRunner:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._pool is not None:
            if exc_type is None:
                self._pool.close()
            else:
                self._pool.terminate()
            self._pool.join()


class Runner(Protocol):
    """What the pipeline needs of an engine: submit jobs, get back finished records."""

    def submit(self, job: TextJob | TokenJob) -> list[dict[str, Any]]: ...

    def drain(self) -> list[dict[str, Any]]: ...

    def __enter__(self) -> Runner: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
