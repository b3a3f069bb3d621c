"""Running one prepare's shard jobs and finishing its dataset: resume, engine, progress, manifest.

Both entry points of :mod:`ddecomp.preparing.pipeline` (text and already-tokenized input) plan
their shards, then hand them here: :func:`run_shards` skips each shard whose ``done.json`` and
files are intact (locally or in object storage), runs the others on the configured engine (local
process pool or Ray tasks) and counts progress from the records the jobs return;
:func:`finish` writes the manifest last (and uploads it for a URL output). :func:`index_identity`
is the part of a run's identity that fixes the decomposition and shard boundaries.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from ddecomp.data.layout import FORMAT_VERSION, MANIFEST
from ddecomp.io import write_json_atomic
from ddecomp.preparing.config import (
    MegatronConfig,
    PrepareConfig,
    RunSettings,
    TokensConfig,
    auto_shard_size,
)
from ddecomp.preparing.outdir import remove_stale_temps
from ddecomp.preparing.progress import Progress
from ddecomp.preparing.ray_engine import make_runner
from ddecomp.preparing.remote_out import RemoteOut
from ddecomp.preparing.shards import load_done

log = logging.getLogger("ddecomp.preparing.pipeline")  # the run's lines belong to its log

Config = PrepareConfig | TokensConfig | MegatronConfig


def finish(cfg: Config, man: dict[str, Any]) -> dict[str, Any]:
    write_json_atomic(cfg.out / MANIFEST, man)
    if cfg.out_url is not None:
        RemoteOut(cfg.out_url).upload_last(cfg.out)
    tot = man["totals"]
    shards = f"{tot['shards']:,} shard{'' if tot['shards'] == 1 else 's'}"
    log.info("prepared %s in %.1f s (%s)", cfg.out, man["prepare"]["elapsed_s"], shards)
    return man


def run_shards(
    cfg: Config,
    jobs: Iterable[tuple[int, Any]],
    make_job: Any,
    total: int | None = None,
    size: Any = None,
    unit: str = "B",
) -> list[dict[str, Any]]:
    """Run (or skip when done) every shard job on ``cfg.engine`` (local processes or Ray tasks);
    return records in shard order. Progress is counted from the records the jobs return;
    ``size(payload)`` is a shard's share of ``total`` input units, for the bar's percentage and
    ETA."""
    records: dict[int, dict[str, Any]] = {}
    sizes: dict[int, int] = {}
    runner = make_runner(cfg.engine, cfg.workers, cfg.ray_address)
    remote = None if cfg.out_url is None else RemoteOut(cfg.out_url)
    if remote is not None:
        remote.claim_listing()
    with Progress(cfg.quiet, total=total, unit=unit) as bar, runner:
        for index, payload in jobs:
            sizes[index] = size(payload) if size is not None else 0
            done = load_done(cfg.out, index) if remote is None else remote.done(index)
            if done is not None:
                records[index] = done
                bar.update(done["documents"], done["tokens"], True, sizes.pop(index))
                continue
            for rec in runner.submit(make_job(index, payload)):
                records[rec["index"]] = rec
                bar.update(rec["documents"], rec["tokens"], size=sizes.pop(rec["index"]))
        for rec in runner.drain():
            records[rec["index"]] = rec
            bar.update(rec["documents"], rec["tokens"], size=sizes.pop(rec["index"]))
    remove_stale_temps(cfg.out)
    return [records[i] for i in sorted(records)]


def index_identity(cfg: RunSettings, total: int) -> dict[str, Any]:
    return {
        "min_len": cfg.min_len,
        "max_len": cfg.max_len,
        "long_docs": cfg.long_docs,
        "tails": [cfg.tails, cfg.tail_len],
        "seed": cfg.seed,
        "val_fraction": cfg.val_fraction,
        "shard_size": cfg.shard_size or auto_shard_size(total),
        "format_version": FORMAT_VERSION,
    }
