"""Training cost and quality of DD vs concat-and-chunk vs packing, in the real training loop.

One prepared script for one GPU (an H100 in the plan; runs anywhere):

1. **Step time** at equal tokens per step, per model size (160m, 410m by default) and method
   (dd, concat at max 8192, concat-dm, pack): ``ddecomp.train.train`` runs ``--step-steps`` steps
   of each; the first ``--skip`` steps (allocation, flex-attention compilation) are dropped.
   DD's *ideal* cost is predicted from its own per-length step costs (median step time of each
   bucket length in the same run, weighted by the steps of each length): measured / ideal - 1 is
   the overhead of the loader and of changing shapes (target: within 3%). DD / concat is the speed
   ratio (target: at most 0.80 at 8192).
2. **A few minutes of training per method** at equal tokens (the token budget that takes concat
   about ``--train-minutes``), with evaluations; the comparison table of ``ddecomp compare``.

Writes ``OUT/train_<hardware>_<date>.md`` (versions, config, tables) and the runs under
``OUT/runs_<hardware>_<date>/``. ``--smoke`` runs everything tiny on the CPU (a test runs it).

    python benchmarks/gpu_train_bench.py --data /tmp/dd-8k      # prepares the default corpus there
    python benchmarks/gpu_train_bench.py --data DIR --smoke --out /tmp/x

On this workplace's device machine (15 minutes of device time per session, start included): its
image has torch, numpy, tokenizers, tqdm, matplotlib and pyarrow but not zstandard, so prepare
the data here and carry it instead of preparing there:

    ddecomp prepare --out gpu-data --val-fraction 0.02 && echo /gpu-data/ >> .git/info/exclude
    # device run, carry ["gpu-data"], timeout_s ~540:
    PYTHONUNBUFFERED=1 PYTHONPATH=src python3 benchmarks/gpu_train_bench.py --data gpu-data \
        --out $OUT 2>&1 | tee $OUT/log

With the defaults (160m and 410m step times, 40 steps x 4 methods each; then 1 minute of concat
training and the same tokens for the other methods) it should take about 6-8 minutes on an H100;
the step-time table is printed as it goes, so a cut-off run still reports it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import re
import sys
import time
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ddecomp import __version__
from ddecomp.compare import compare, format_table, load_run, plot_runs
from ddecomp.train import METHODS, TrainConfig, train

TOKENS_PER_STEP = {"tiny": 1024, "small": 16384, "160m": 65536, "410m": 32768, "1b": 16384}


def hardware() -> str:
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    import os

    return f"cpu-{os.cpu_count()}core"


def ensure_data(path: Path, max_len: int) -> None:
    if (path / "manifest.json").is_file():
        return
    from ddecomp.prepare import PrepareConfig, prepare

    print(f"preparing the default corpus into {path} (max_len {max_len}, val 2%)", flush=True)
    prepare(PrepareConfig(out=path, val_fraction=0.02, max_len=max_len, quiet=True))


def read_metrics(run: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]


def step_costs(run: Path, skip: int) -> dict[str, Any]:
    """Mean seconds per step after ``skip`` steps, and DD's ideal from per-length medians."""
    rows = read_metrics(run)[skip:]
    assert rows, f"{run}: no steps after skipping {skip}"
    t = np.array([r["step_s"] for r in rows])
    L = np.array([r["seq_len"] for r in rows])
    per_len = {int(x): float(np.median(t[L == x])) for x in np.unique(L)}
    ideal = float(np.mean([per_len[int(x)] for x in L]))
    mfu = [r["mfu"] for r in rows if r["mfu"] is not None]
    return {
        "steps": len(rows), "step_s": float(t.mean()), "ideal_step_s": ideal,
        "overhead": float(t.mean()) / ideal - 1, "per_len_median_s": per_len,
        "mean_len": float(L.mean()), "mfu": float(np.mean(mfu)) if mfu else None,
    }  # fmt: skip


def run_method(base: TrainConfig, out: Path) -> dict[str, Any] | str:
    """Train one config; a failure (e.g. out of memory) is recorded, and the table goes on."""
    try:
        train(replace(base, out=str(out)))
        return {"ok": True}
    except Exception as e:  # one failing method must not lose the others' numbers
        traceback.print_exc()
        return f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
    finally:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", required=True, help="prepared dataset (prepared if missing)")
    ap.add_argument("--sizes", default="160m,410m")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--max-len", type=int, default=8192)
    ap.add_argument("--step-steps", type=int, default=40, help="steps per step-time run")
    ap.add_argument("--skip", type=int, default=8, help="first steps excluded from step times")
    ap.add_argument("--train-minutes", type=float, default=1.0, help="concat's training time")
    ap.add_argument("--train-size", default="160m", help="model size of the training runs")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model")
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--smoke", action="store_true", help="tiny model, few steps, CPU")
    args = ap.parse_args()

    data = Path(args.data)
    if args.smoke:
        args.sizes, args.train_size, args.step_steps, args.skip = "tiny", "tiny", 6, 2
    ensure_data(data, args.max_len)
    from ddecomp.dataset import open_dataset

    ds = open_dataset(data)
    max_len = min(args.max_len, ds.max_len)
    device = "cpu" if args.smoke else "auto"
    hw, date = hardware(), datetime.date.today().isoformat()
    out = Path(args.out)
    runs_dir = out / f"runs_{hw}_{date}"
    methods = args.methods.split(",")
    t_start = time.perf_counter()

    step_table: dict[str, dict[str, Any]] = {}
    for size in args.sizes.split(","):
        tps = TOKENS_PER_STEP[size] if not args.smoke else 2 * max_len
        for m in methods:
            cfg = TrainConfig(
                data=str(data), out="", method=m, size=size, tokens=args.step_steps * tps,
                tokens_per_step=tps, max_len=max_len, warmup=1, device=device,
                compile=args.compile, eval_tokens=max_len, progress=False,
            )  # fmt: skip
            run = runs_dir / f"steps_{size}_{m}"
            res = run_method(cfg, run)
            ok = isinstance(res, dict)
            step_table[f"{size}/{m}"] = step_costs(run, args.skip) if ok else {"error": res}
            print(size, m, step_table[f"{size}/{m}"], flush=True)

    # training at equal tokens: the budget that takes concat about --train-minutes
    size = args.train_size
    tps = TOKENS_PER_STEP[size] if not args.smoke else 2 * max_len
    concat = step_table.get(f"{size}/concat", {})
    sec = concat.get("step_s") or 1.0
    steps = 12 if args.smoke else max(50, int(args.train_minutes * 60 / sec))
    train_runs = []
    # concat first: it is the baseline of the comparison (time to reach its final val loss)
    for m in sorted(methods, key=lambda x: x != "concat"):
        cfg = TrainConfig(
            data=str(data), out="", method=m, size=size, tokens=steps * tps, tokens_per_step=tps,
            max_len=max_len, warmup=max(1, steps // 20), device=device, compile=args.compile,
            eval_every=max(1, steps // 5), progress=False,
            eval_tokens=max_len if args.smoke else 4 * max_len,
        )  # fmt: skip
        run = runs_dir / f"train_{size}_{m}"
        res = run_method(cfg, run)
        if isinstance(res, dict):
            train_runs.append(run)
        else:
            print(f"training {m} failed: {res}", flush=True)
    loaded = [load_run(r) for r in train_runs]
    table = format_table(compare(loaded)) if loaded else "(no training run finished)"
    out.mkdir(parents=True, exist_ok=True)
    plot = out / f"train_{hw}_{date}.png"
    if loaded:
        plot_runs(loaded, plot)

    lines = [
        f"# Training cost and quality: DD vs baselines ({hw}, {date})", "",
        f"- ddecomp {__version__}, torch {torch.__version__}, python {platform.python_version()}, "
        f"CUDA {torch.version.cuda}, device {hw}{' (SMOKE RUN: tiny, CPU)' if args.smoke else ''}",
        f"- data: {data} (fingerprint {ds.fingerprint[:12]}), buckets {ds.min_len}..{ds.max_len}, "
        f"max_len {max_len}; compile {args.compile}; total wall time "
        f"{time.perf_counter() - t_start:.0f} s",
        f"- command: `{' '.join(sys.argv)}`", "",
        "## Step time at equal tokens per step (real training loop)", "",
        f"Mean seconds per step after the first {args.skip} steps; `ideal` is DD's cost predicted "
        "from its own per-length median step times; `vs concat` is the ratio to concat at the "
        "same size.", "",
        "| size/method | tokens/step | mean L | s/step | ideal s/step | overhead | vs concat "
        "| MFU |",
        "|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for key, r in step_table.items():
        sz = key.split("/")[0]
        if "error" in r:
            lines.append(f"| {key} | - | - | failed: {r['error']} | | | | |")
            continue
        c = step_table.get(f"{sz}/concat", {}).get("step_s")
        tps_k = TOKENS_PER_STEP[sz] if not args.smoke else 2 * max_len
        mfu = f"{r['mfu']:.3f}" if r["mfu"] is not None else "-"
        vs = f"{r['step_s'] / c:.3f}" if c else "-"
        lines.append(
            f"| {key} | {tps_k:,} | {r['mean_len']:.0f} | {r['step_s']:.4f} | "
            f"{r['ideal_step_s']:.4f} | {100 * r['overhead']:+.1f}% | {vs} | {mfu} |"
        )
    lines += [
        "", f"## Training at equal tokens ({size}, {steps} steps x {tps:,} tokens)", "",
        table, "", f"Figure: `{plot.name}`. Runs: `{runs_dir}`.", "",
    ]  # fmt: skip
    report = out / f"train_{hw}_{date}.md"
    report.write_text("\n".join(lines))
    print(f"wrote {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
