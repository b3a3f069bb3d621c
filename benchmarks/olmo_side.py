"""OLMo-core's side of ``compare_olmo.py``; runs inside the separate benchmark venv.

``bench-venv/bin/python benchmarks/olmo_side.py <command> '<json args>'`` prints one JSON object
on stdout. OLMo-core (``ai2-olmo-core``, pinned in ``requirements-olmo.txt``) is imported only
inside the commands, so ``compare_olmo.py`` can import the pure helpers below (RSS sampler,
document-crossing and duplicate counts) from the project venv, where OLMo-core is absent.

Commands, all on a flat EOS-separated uint16 token file:

- ``index``: times ``bucket_documents`` alone, best of 3 (OLMo-core's index build: a Python
  loop over the documents, one ``capped_powers_of_2`` per document) and the whole
  ``NumpyVSLDataset.prepare()`` (the same build in a process pool, then the per-instance lengths
  and per-bucket index files);
  reports tokens per bucket, tokens in no bucket, trained targets (a piece of ``2^k`` tokens
  trains ``2^k - 1`` targets) and pieces whose stored length matches no bucket (the length dtype
  is chosen one size too small, so pieces of max = 256 or 65536 tokens are stored as 0).
- ``loader``: one full epoch of ``NumpyVSLDataLoader`` (curriculum, workers, reader threads as
  given); times only the ``next()`` calls; counts rows served twice, rows never served, rows that
  cross a document boundary (from the loader's own ``index`` field and the token file's EOS
  positions) and rows whose tokens differ from the file; reports peak RSS of the process tree.
  Exceptions (OLMo-core crashes) are reported as ``{"error": ...}``, not raised.
- ``awkward``: bucket batch counts for which grow-linear's per-sub-cycle rounding hands out more
  batches than a bucket holds in a cycle (found with OLMo-core's own rounding function).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

# ---------------------------------------------------------------------------- shared helpers


class RssSampler:
    """Peak resident memory of this process plus its children, sampled every ``interval`` s.

    Reads ``/proc/<pid>/status`` (VmRSS) of the process and of the children listed in
    ``/proc/<pid>/task/*/children`` (DataLoader workers). Sampling costs ~0.1 ms per tick, so the
    timing of the measured loop is not affected; peaks shorter than ``interval`` can be missed.
    """

    def __init__(self, interval: float = 0.05) -> None:
        self.interval, self.peak_bytes = interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _rss(pid: int) -> int:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    @staticmethod
    def _children(pid: int) -> list[int]:
        out: list[int] = []
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                out += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
        return out

    def sample(self) -> int:
        pid = os.getpid()
        total = self._rss(pid) + sum(self._rss(c) for c in self._children(pid))
        self.peak_bytes = max(self.peak_bytes, total)
        return total

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> RssSampler:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


def timed_epoch(loader: Any, on_batch: Any) -> dict[str, Any]:
    """Iterate ``loader`` once, timing only the ``next()`` calls, under an :class:`RssSampler`.

    ``on_batch(batch)`` runs outside the timed region (to record rows for the exactness checks).
    An exception from the loader ends the epoch and is returned under ``error`` as a finding.
    """
    steps = tokens = 0
    loop_s = 0.0
    by_len: dict[int, list[float]] = {}
    out: dict[str, Any] = {}
    it = iter(loader)
    with RssSampler() as rss:
        while True:
            t0 = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                loop_s += time.perf_counter() - t0
                break
            except Exception as e:
                out = _error(e)
                break
            dt = time.perf_counter() - t0
            loop_s += dt
            n = int(batch["input_ids"].numel())
            steps += 1
            tokens += n
            per_len = by_len.setdefault(int(batch["input_ids"].shape[1]), [0.0, 0.0])
            per_len[0] += n
            per_len[1] += dt
            on_batch(batch)
    return out | {
        "steps": steps, "tokens": tokens, "seconds": loop_s,
        "tokens_per_s": tokens / loop_s if loop_s else 0.0,
        "batches_per_s": steps / loop_s if loop_s else 0.0,
        "peak_rss_bytes": rss.peak_bytes,
        "tokens_per_s_by_length": {str(L): t / s for L, (t, s) in sorted(by_len.items())},
    }  # fmt: skip


def doc_ends(tokens: np.ndarray, eos_id: int) -> np.ndarray:
    """Exclusive end offset of every EOS-terminated document (int64, ascending)."""
    return np.flatnonzero(tokens == eos_id).astype(np.int64) + 1


def crossing_rows(starts: np.ndarray, stops: np.ndarray, ends: np.ndarray) -> int:
    """How many token ranges ``[starts[i], stops[i])`` are not inside one document."""
    doc = np.searchsorted(ends, starts, side="right")  # the document holding each start
    inside = (doc < ends.size) & (stops <= ends[np.minimum(doc, ends.size - 1)])
    return int((~inside).sum())


def row_fingerprints(rows: np.ndarray) -> np.ndarray:
    """Position-weighted sum of each row (int64): a cheap content check of served rows.

    Costs one pass over the batch (as much as reading it once), done outside the timed calls.
    """
    w = np.arange(1, rows.shape[1] + 1, dtype=np.int64)
    return rows.astype(np.int64, copy=False) @ w


def served_twice(ids: np.ndarray) -> int:
    """Number of servings beyond the first, over all served row ids."""
    return int(ids.size - np.unique(ids).size)


def _error(e: BaseException) -> dict[str, Any]:
    """The exception in one line, and where: the innermost OLMo-core frame, then the last one."""
    frames = traceback.extract_tb(e.__traceback__)
    ours = [f for f in frames if "olmo_core" in f.filename] or frames
    where = " -> ".join(
        dict.fromkeys(
            f"{Path(f.filename).name}:{f.lineno} in {f.name}" for f in (ours[-1], frames[-1])
        )
    )
    msg = str(e).splitlines()[0] if str(e) else ""
    return {"error": f"{type(e).__name__}: {msg}".rstrip(": "), "at": where}


# ---------------------------------------------------------------------------- OLMo-core commands


def _dataset(a: dict[str, Any]) -> Any:
    from olmo_core.data.numpy_dataset import (
        NumpyVSLDataset,
        VSLGrowLinearCurriculum,
        VSLGrowP2Curriculum,
        VSLNaturalCurriculum,
    )

    cur = a.get("curriculum", "natural")
    curriculum = {
        "natural": lambda: VSLNaturalCurriculum(),
        "grow-p2": lambda: VSLGrowP2Curriculum(num_cycles=a.get("cycles", 8)),
        "grow-linear": lambda: VSLGrowLinearCurriculum(num_cycles=a.get("cycles", 8)),
    }[cur]()
    ds = NumpyVSLDataset(
        a["tokens"], pad_token_id=a["eos_id"], eos_token_id=a["eos_id"],
        vocab_size=a["vocab_size"], max_sequence_length=a["max_len"],
        min_sequence_length=a["min_len"], curriculum=curriculum, dtype=np.uint16,
    )  # fmt: skip
    ds.work_dir = a["work_dir"]
    return ds


def _doc_index(ds: Any) -> np.ndarray:
    """OLMo-core's piece table ``[n, 2]`` of (start, end) token offsets (one token file)."""
    path = ds._get_document_indices_path(ds.paths[0])
    return np.fromfile(path, dtype=np.uint32).reshape(-1, 2).astype(np.int64)


def cmd_index(a: dict[str, Any]) -> dict[str, Any]:
    from olmo_core.data.utils import bucket_documents

    tokens = np.memmap(a["tokens"], dtype=np.uint16, mode="r")
    n = int(tokens.size)
    _ = int(tokens.sum(dtype=np.uint64))  # page cache warm, as for ddecomp
    work = Path(a["work_dir"])
    work.mkdir(parents=True, exist_ok=True)
    # ddecomp.decompose.bucket_lengths_for, repeated: this venv has OLMo-core and no ddecomp.
    buckets = [1 << k for k in range(a["min_len"].bit_length() - 1, a["max_len"].bit_length())]
    t_bucket = float("inf")
    for _ in range(3):  # best of 3, as for ddecomp
        t0 = time.perf_counter()
        docs, pieces = bucket_documents(
            a["tokens"], work / "bucket_documents.npy", buckets=buckets,
            eos_token_id=a["eos_id"], dtype=np.uint16,
        )  # fmt: skip
        t_bucket = min(t_bucket, time.perf_counter() - t0)
    ds = _dataset(a)
    t0 = time.perf_counter()
    ds.prepare()
    t_prepare = time.perf_counter() - t0
    per_bucket = {str(L): int(L * n_) for L, n_ in ds.instances_per_bucket}
    table = _doc_index(ds)
    piece_len = table[:, 1] - table[:, 0]
    stored = np.asarray(ds.get_instance_lengths()).astype(np.int64)
    mismatch = stored != piece_len
    kept = int(sum(per_bucket.values()))
    return {
        "tokens": n, "documents": int(docs), "pieces": int(pieces),
        "bucket_documents_s": t_bucket, "prepare_s": t_prepare,
        "bucket_documents_tokens_per_s": n / t_bucket, "prepare_tokens_per_s": n / t_prepare,
        "bucket_tokens": per_bucket,
        "bucket_rows": {str(L): int(c) for L, c in ds.instances_per_bucket},
        "tokens_in_no_bucket": n - kept,
        "pieces_stored_with_wrong_length": int(mismatch.sum()),
        "tokens_lost_to_wrong_length": int(piece_len[mismatch].sum()),
        "targets_trained": int(sum(c * (L - 1) for L, c in ds.instances_per_bucket)),
        "lengths_dtype": np.dtype(ds.lengths_dtype).name,
    }  # fmt: skip


def cmd_loader(a: dict[str, Any]) -> dict[str, Any]:
    from olmo_core.data.collator import DataCollator
    from olmo_core.data.data_loader import NumpyDataLoaderBase

    out: dict[str, Any] = {}
    try:
        ds = _dataset(a)
        ds.prepare()
        loader = NumpyDataLoaderBase.wrap_numpy_dataset(
            ds, global_batch_size=a["tokens_per_step"], work_dir=a["work_dir"],
            collator=DataCollator(pad_token_id=a["eos_id"]), seed=a.get("seed", 0),
            num_workers=a["workers"], num_threads=a.get("threads"),
        )  # fmt: skip
        # a fresh global order per run (OLMo-core caches it per curriculum in the work dir)
        cached = Path(a["work_dir"]) / f"dataset-{ds.fingerprint}" / ds.curriculum.short_str
        shutil.rmtree(cached, ignore_errors=True)
        t0 = time.perf_counter()
        loader.reshuffle(epoch=1)
        out["reshuffle_s"] = time.perf_counter() - t0
        expected_rows = sum(b * (a["tokens_per_step"] // L) for L, b in loader.batches_per_bucket)
        out["steps_planned"] = int(loader.total_batches)
        per_batch = {L: a["tokens_per_step"] // L for L, _ in loader.batches_per_bucket}
        out["rows_left_out"] = {
            str(L): int(n - dict(loader.batches_per_bucket)[L] * per_batch[L])
            for L, n in ds.instances_per_bucket
        }
    except Exception as e:  # an OLMo-core failure is a finding, reported as such
        return out | _error(e)
    tokens = np.memmap(a["tokens"], dtype=np.uint16, mode="r")
    table = _doc_index(ds)
    ids: list[np.ndarray] = []
    prints: list[np.ndarray] = []

    def record(batch: Any) -> None:
        ids.append(batch["index"].numpy().astype(np.int64))
        prints.append(row_fingerprints(batch["input_ids"].numpy()))

    out |= timed_epoch(loader, record)
    loader.reset()
    all_ids = np.concatenate(ids) if ids else np.zeros(0, dtype=np.int64)
    ends = doc_ends(tokens, a["eos_id"])
    rows = table[all_ids]
    want = np.array([row_fingerprints(tokens[s:e][None]) for s, e in rows]).reshape(-1)
    got = np.concatenate(prints) if prints else np.zeros(0, dtype=np.int64)
    return out | {
        "rows_served": int(all_ids.size), "rows_expected": int(expected_rows),
        "rows_served_twice": served_twice(all_ids),
        "rows_never_served": int(expected_rows - np.unique(all_ids).size),
        "rows_crossing_documents": crossing_rows(rows[:, 0], rows[:, 1], ends),
        "rows_with_wrong_tokens": int((want != got).sum()),
    }  # fmt: skip


def cmd_awkward(a: dict[str, Any]) -> dict[str, Any]:
    """Smallest per-cycle batch count per bucket that grow-linear's rounding over-allocates."""
    from olmo_core.data.numpy_dataset import VSLGrowLinearCurriculum

    k = a["num_buckets"]
    found: dict[str, int] = {}
    for bucket in range(k):
        for c in range(1, 500):
            if sum(VSLGrowLinearCurriculum._get_num_bucket_batches_for_cycle(bucket, k, c)) > c:
                found[str(bucket)] = c
                break
    return {"per_cycle_batches_overallocated": found}


def main() -> int:
    cmd, args = sys.argv[1], json.loads(sys.argv[2])
    fn = {"index": cmd_index, "loader": cmd_loader, "awkward": cmd_awkward}[cmd]
    import logging

    logging.disable(logging.WARNING)  # OLMo-core logs every file it writes at INFO
    print(json.dumps(fn(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
