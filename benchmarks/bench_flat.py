"""The flat layout on the CPU: compile time and graphs of a 3-length run, step time per length.

1. **Compile**: ``ddecomp train --compile`` of the tiny model, 12 steps over 3 bucket lengths,
   ``--layout flat`` and ``rows``, each in a fresh process with inductor's caches off:
   ``compile_s`` (the warm-up that compiles every shape before the clock), ``graphs_compiled``
   and the timed loop's seconds from each run's summary.
2. **Step time per length** (tiny and small, eager, forward + backward, median of ``--iters``
   after ``--warmup``): rows ``[T / L, L]`` causal against flat ``[1, T]`` through
   :func:`ddecomp.training.attention.make_flat_mask` on its two exact CPU paths: per-sequence
   SDPA (``chunk``, what an eager CPU run uses) and the dense ``[1, 1, T, T]`` block-diagonal
   mask (what a compiled CPU run uses, one graph). Prints the ratios flat / rows.

    PYTHONPATH=src python benchmarks/bench_flat.py [--out benchmarks/results] [--quick]

Writes ``flat_<hardware>_<date>.{md,json}`` into ``--out``; ``plot_flat.py`` draws the json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from benchlib import hardware

from ddecomp.preparing.pipeline import TokensConfig, prepare_tokens
from ddecomp.training.attention import make_flat_mask
from ddecomp.training.model import GPT, model_config

CPU = torch.device("cpu")


def _learnable(n: int, seed: int) -> Any:
    import numpy as np

    rng = np.random.default_rng(seed)
    docs, got = [], 0
    while got < n:
        L = int(np.clip(rng.lognormal(np.log(120), 0.9), 4, 1000))
        d = (int(rng.integers(0, 60)) + int(rng.integers(1, 7)) * np.arange(L)) % 60
        docs.append(np.append(d, 63).astype(np.uint16))
        got += L + 1
    return np.concatenate(docs)


def compile_runs(tmp: Path, tokens_per_step: int, steps: int) -> list[dict[str, Any]]:
    data = tmp / "ds"
    prepare_tokens(TokensConfig(_learnable(120_000, 0), data, eos_id=63, min_len=16, max_len=128,
                                val_fraction=0.05, vocab_size=64))  # fmt: skip
    out = []
    for layout in ("flat", "rows"):
        # one fresh process each, inductor's caches off: neither run reuses the other's kernels
        cmd = [
            sys.executable, "-m", "ddecomp", "train", str(data), "--out", str(tmp / layout),
            "--tokens", str(steps * tokens_per_step), "--tokens-per-step", str(tokens_per_step),
            "--warmup", "1", "--device", "cpu", "--no-progress", "--eval-tokens", "512",
            "--compile", "--layout", layout, "--no-checkpoints",
        ]  # fmt: skip
        env = {**os.environ, "TORCHINDUCTOR_FORCE_DISABLE_CACHES": "1"}
        t = time.perf_counter()
        subprocess.run(cmd, check=True, env=env, capture_output=True)
        s = json.loads((tmp / layout / "summary.json").read_text())
        lines = (tmp / layout / "metrics.jsonl").read_text().splitlines()
        lengths = sorted({json.loads(x)["seq_len"] for x in lines})
        row = {
            "layout": layout,
            "lengths": lengths,
            "compile_s": round(s["compile_s"], 2),
            "graphs_compiled": s["graphs_compiled"],
            "graphs_compiled_in_loop": s["graphs_compiled_in_loop"],
            "train_s": round(s["elapsed_s"], 2),
            "wall_s": round(time.perf_counter() - t, 2),
        }
        print(json.dumps(row), flush=True)
        out.append(row)
    return out


def _median_s(fn: Callable[[], None], warmup: int, iters: int) -> float:
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def step_times(size: str, T: int, lengths: list[int], warmup: int, iters: int) -> list[dict]:
    torch.manual_seed(0)
    model = GPT(model_config(size, 64))
    g = torch.Generator().manual_seed(1)
    out = []
    for L in lengths:
        x = torch.randint(0, 64, (T // L, L), generator=g)
        flat, pos = x.reshape(1, T), torch.arange(L).repeat(T // L)[None]
        cu = torch.arange(0, T + 1, L, dtype=torch.int32)

        def run(
            ids: torch.Tensor,
            p: torch.Tensor | None,
            kind: str | None,
            L: int = L,
            cu: torch.Tensor = cu,
        ) -> Callable[[], None]:
            def go() -> None:  # the mask is built per step, as the trainer does
                m = None if kind is None else make_flat_mask(cu, L, T, CPU, kind == "dense")
                model(ids, p, m).float().mean().backward()
                model.zero_grad(set_to_none=True)

            return go

        rows_s = _median_s(run(x, None, None), warmup, iters)
        chunk_s = _median_s(run(flat, pos, "chunk"), warmup, iters)
        dense_s = _median_s(run(flat, pos, "dense"), warmup, iters)
        row = {
            "size": size,
            "T": T,
            "L": L,
            "rows_ms": round(rows_s * 1e3, 2),
            "flat_chunk_ms": round(chunk_s * 1e3, 2),
            "flat_dense_ms": round(dense_s * 1e3, 2),
            "chunk_over_rows": round(chunk_s / rows_s, 3),
            "dense_over_rows": round(dense_s / rows_s, 3),
        }
        print(json.dumps(row), flush=True)
        out.append(row)
    return out


def report(res: dict[str, Any]) -> str:
    hw, lines = res["hardware"], []
    lines += [f"# The flat layout on the CPU ({res['date']})", "",
              f"Machine: {hw}; torch threads {res['threads']}; load average at the start "
              f"{[round(x, 1) for x in res['load_average_at_start']]} (a shared machine: "
              "absolute times are noisy, compare within a row).",
              f"torch {torch.__version__}. Command: `{res['command']}`.", "",
              "## Compile: one run over several bucket lengths (tiny model, `--compile`)", "",
              "| layout | lengths | graphs compiled | compiled in the loop | compile s | train s |",
              "|---|---|---|---|---|---|"]  # fmt: skip
    for r in res["compile"]:
        lines.append(
            f"| {r['layout']} | {', '.join(map(str, r['lengths']))} | {r['graphs_compiled']} | "
            f"{r['graphs_compiled_in_loop']} | {r['compile_s']} | {r['train_s']} |"
        )
    lines += ["", "## Step time per length (eager, forward + backward, median)", "",
              "| size | T | L | rows ms | flat per-sequence ms | flat dense ms | "
              "per-sequence / rows | dense / rows |",
              "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in res["steps"]:
        lines.append(
            f"| {r['size']} | {r['T']} | {r['L']} | {r['rows_ms']} | {r['flat_chunk_ms']} | "
            f"{r['flat_dense_ms']} | {r['chunk_over_rows']} | {r['dense_over_rows']} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--quick", action="store_true", help="fewer lengths and iterations")
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--skip-compile", action="store_true")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: stabler)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    res: dict[str, Any] = {
        "date": datetime.date.today().isoformat(),
        "hardware": hardware(),
        "threads": a.threads,
        "load_average_at_start": os.getloadavg(),
        "command": "PYTHONPATH=src python benchmarks/bench_flat.py",
    }
    with tempfile.TemporaryDirectory() as tmp:
        res["compile"] = [] if a.skip_compile else compile_runs(Path(tmp), 1024, 12)
    iters, warm = (2, 1) if a.quick else (a.iters, a.warmup)
    res["steps"] = step_times("tiny", 4096, [16, 64, 256, 1024], warm, iters)
    if not a.quick:
        res["steps"] += step_times("small", 4096, [16, 64, 256, 1024], warm, iters)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"flat_cpu-{res['hardware']['cores']}core_{res['date']}"
    (out / f"{stem}.json").write_text(json.dumps(res, indent=1))
    (out / f"{stem}.md").write_text(report(res))
    print(report(res))


if __name__ == "__main__":
    main()
