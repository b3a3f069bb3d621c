"""Issue 21's cost number: per-source logging in the trainer, per step, against a tiny-model step.

A blend of three synthetic sources (uint16 tokens, vocabulary 8192, log-normal documents), the
reference GPT at ``--size tiny`` on the CPU, DD's loader at ``tokens_per_step`` (default 16,384,
the trainer's default) and lengths up to 512. Two measurements per step:

- **isolated** (the number to read): the differentiated loss is the same computation with and
  without sources (``log_softmax`` + ``nll_loss``, bitwise equal), so what logging adds is
  exactly :func:`~ddecomp.training.step.row_losses` (a gather from the log-probabilities) and
  :meth:`~ddecomp.training.sources.SourceMetrics.record` (``index_add``, ``bincount``, one
  ``all_sum``, one ``tolist``). They are timed on the step's own log-probabilities, ``--reps``
  times (median), against the median :func:`~ddecomp.training.step.train_step` without sources.
- **paired**: ``train_step`` on the same batch twice, alternating the order, with and without
  the row-loss buffer; the median of the per-step differences and their quartiles. On a shared
  2-core machine the quartiles span +-1 s of a 2.6 s step: a check that nothing else changed, not
  a measurement of a few milliseconds.

Usage: ``python benchmarks/bench_sources.py [--steps 40] [--tokens-per-step 16384]``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ddecomp import Blend, TokensConfig, VSLLoader, prepare_tokens
from ddecomp.loading.protocols import IGNORE_INDEX
from ddecomp.loading.world import World
from ddecomp.training.model import GPT, model_config
from ddecomp.training.sources import SourceMetrics, source_names
from ddecomp.training.step import row_losses, train_step

ROOT = Path(__file__).resolve().parents[1]
EOS = 8191


def _source(root: Path, seed: int, mean: float) -> Path:
    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.lognormal(np.log(mean), 1.0, size=4000), 2, 4000).astype(np.int64)
    toks = rng.integers(0, EOS, size=int(lengths.sum()), dtype=np.uint16)
    toks[np.cumsum(lengths) - 1] = EOS
    prepare_tokens(TokensConfig(toks, root, eos_id=EOS, min_len=16, max_len=512, vocab_size=8192))
    return root


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--tokens-per-step", type=int, default=1 << 14)
    ap.add_argument("--reps", type=int, default=20, help="isolated timings per step (median)")
    ap.add_argument("--out", default=None, help="JSON result (default: results/, dated)")
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    tmp = Path(tempfile.mkdtemp(prefix="ddecomp_bench_sources_"))
    try:
        dirs = [_source(tmp / f"s{i}", i, m) for i, m in enumerate((80.0, 300.0, 900.0))]
        blend = Blend([(d, 1.0) for d in dirs], seed=0)
        loader = VSLLoader(blend, tokens_per_step=args.tokens_per_step, seed=0)
        torch.manual_seed(0)
        model = GPT(model_config("tiny", blend.vocab_size))
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        names = source_names(blend)
        assert names is not None
        metrics = SourceMetrics(names, torch.device("cpu"))
        world = World()
        plain, logged, diffs, isolated = [], [], [], []
        batches = iter(loader)
        for i in range(args.steps + 3):
            batch = next(batches)
            x, y = batch["input_ids"].contiguous(), batch["labels"].contiguous()
            micro = [(x, y, None, None)]
            n = torch.tensor(float((y != IGNORE_INDEX).sum()), dtype=torch.float64)
            times = {}
            for with_src in (i % 2 == 0, i % 2 == 1):
                t = time.perf_counter()
                if with_src:
                    row = metrics.row_buffer(x.shape[0])
                    train_step(model, model.parameters(), opt, None, micro, n, 1, 1.0, row_loss=row)
                    metrics.record(batch, row, world)
                else:
                    train_step(model, model.parameters(), opt, None, micro, n, 1, 1.0)
                times[with_src] = time.perf_counter() - t
            if i >= 3:  # warm-up steps left out
                plain.append(times[False])
                logged.append(times[True])
                diffs.append(times[True] - times[False])
                with torch.no_grad():
                    logp = torch.log_softmax(model(x, None, None).flatten(0, 1).float(), dim=-1)
                reps = []
                for _ in range(args.reps):
                    t = time.perf_counter()
                    metrics.record(batch, row_losses(logp, y), world)
                    reps.append(time.perf_counter() - t)
                isolated.append(statistics.median(reps))
        step = statistics.median(plain)
        extra = statistics.median(diffs)
        res = {
            "date": datetime.date.today().isoformat(),
            "machine": f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}",
            "torch": torch.__version__,
            "model": "tiny",
            "tokens_per_step": args.tokens_per_step,
            "steps": args.steps,
            "sources": len(names),
            "median_step_ms": round(1e3 * step, 2),
            "median_step_with_sources_ms": round(1e3 * statistics.median(logged), 2),
            "median_extra_ms": round(1e3 * extra, 3),
            "overhead_pct": round(100 * extra / step, 2),
            "isolated_extra_ms": round(1e3 * statistics.median(isolated), 3),
            "isolated_overhead_pct": round(100 * statistics.median(isolated) / step, 3),
            # the spread of the paired differences: what the median can be trusted to
            "extra_ms_quartiles": [round(1e3 * q, 3) for q in statistics.quantiles(diffs, n=4)],
            "load_average": [round(v, 2) for v in os.getloadavg()],
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(res))
    out = Path(args.out or ROOT / f"benchmarks/results/sources_cpu-2core_{res['date']}.json")
    out.write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
