"""Training cost and quality of DD vs concat-and-chunk vs packing, in the real training loop.

One prepared script for one GPU (an H100 in the plan; runs anywhere):

1. **Fixed-shape step costs**, per model size (160m, 410m by default): one optimizer step at each
   bucket length ``L`` with ``[tokens_per_step / L, L]`` random tokens, no loader, one shape per
   measurement (:func:`ddecomp.training.stepcost.measure_step_costs`; ``--cost-warmup`` untimed,
   then
   ``--cost-iters`` timed steps, median).
2. **Step time in the real loop** at equal tokens per step, per size and method (dd, concat at max
   8192, concat-dm, pack): ``ddecomp.training.loop.train`` runs ``--step-steps`` steps of each; the
   first
   ``--skip`` (allocation, flex-attention compilation) are dropped. DD's *ideal* prices each of
   its logged steps at its length's fixed-shape cost; measured / ideal - 1 is what the loader,
   the changing shapes and the loop's bookkeeping add (target: within 3%). Concat gets the same
   control at its one shape. DD / concat of mean step times is the speed ratio (target: at most
   0.80 at 8192), and DD's whole-epoch mix of lengths is priced too.
   ``--layout both`` adds ``dd-flat``: DD's steps as one ``[1, T]`` stream per rank, attention
   block-diagonal through ``cu_seqlens`` (FlexAttention on the GPU), priced against the same
   ideal; with ``--compile`` the report gives each run's graphs for the whole plan (flat: 1).
3. **A few minutes of training per method** at equal tokens (the token budget that takes concat
   about ``--train-minutes``), with evaluations; the comparison table of ``ddecomp compare``.

Writes into ``--out``: ``train_<hardware>_<date>.md`` (versions, config, tables), ``.json`` (all
numbers), ``.png`` (the comparison figure) and ``_runs.tar.gz`` (every run's logs, no
checkpoints); the runs themselves go to ``--runs``. ``--smoke`` runs everything tiny on the CPU
(a test runs it).

    python benchmarks/gpu_train_bench.py --data /tmp/dd-8k      # prepares the default corpus there
    python benchmarks/gpu_train_bench.py --data DIR --smoke --out /tmp/x

On this workplace's device machine (15 minutes of device time per session, start included): its
image has torch, numpy, tokenizers, tqdm, matplotlib and pyarrow but not zstandard, so prepare
the data here and carry it instead of preparing there:

    bash benchmarks/gpu_data.sh     # gpu-data (default corpus) + gpu-web (12M web-like tokens,
                                    # vocab 50,257), both git-excluded: 18 + 24 MB to carry
    # device run, carry ["gpu-data", "gpu-web"], timeout_s ~560:
    PYTHONUNBUFFERED=1 PYTHONPATH=src python3 benchmarks/gpu_train_bench.py --data gpu-data \
        --extra-data gpu-web --out $OUT --runs /tmp/runs 2>&1 | tee $OUT/log

With the defaults (per size: 6 lengths x 7 fixed-shape steps, then 40 loop steps x 4 methods;
the same for dd and concat at 160m on the extra data; then 45 s of concat training and the
same tokens for the other methods) it should take about 8-9 minutes on an H100 (estimated from
the step costs in docs/method.md section 6; never run yet). Each table row is printed as it is
measured, and the report is written after the step times and again at the end, so a run cut off
by the 10-minute command limit still leaves its step-time tables; ``--sizes 160m`` halves the
first part.
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
from ddecomp.reporting.compare import compare, format_table, load_run
from ddecomp.reporting.plots import plot_runs
from ddecomp.training.loop import METHODS, TrainConfig, train
from ddecomp.training.stepcost import ideal_step_cost, measure_step_costs, price_plan

# Bucket token shares (%) of a DCLM subset, 256..8192 (docs/method.md section 6): the paper's web
# data, whose DD step cost the paper's "8k at the cost of 2k" refers to.
DCLM_SHARES = {256: 10.8, 512: 18.2, 1024: 22.5, 2048: 19.2, 4096: 15.7, 8192: 13.7}
FLAT = "dd-flat"  # DD in the flat layout (--layout flat/both): FlexAttention, one compiled graph
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
    from ddecomp.preparing.pipeline import PrepareConfig, prepare

    print(f"preparing the default corpus into {path} (max_len {max_len}, val 2%)", flush=True)
    prepare(PrepareConfig(out=path, val_fraction=0.02, max_len=max_len, quiet=True))


def read_metrics(run: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]


def loop_steps(run: Path, skip: int) -> tuple[np.ndarray, np.ndarray]:
    """Seconds and sequence length of each logged step after the first ``skip``."""
    rows = read_metrics(run)[skip:]
    assert rows, f"{run}: no steps after skipping {skip}"
    return np.array([r["step_s"] for r in rows]), np.array([r["seq_len"] for r in rows])


def summarize_method(
    run: Path, skip: int, method: str, max_len: int, costs: dict[int, float]
) -> dict[str, Any]:
    """Mean loop step time after ``skip`` steps, and the fixed-shape ideal of the same steps.

    The ideal prices each step at its length's fixed-shape median (causal attention: DD, and
    concat at max_len, the control); document-masked methods have no causal ideal.
    """
    t, L = loop_steps(run, skip)
    summary = json.loads((run / "summary.json").read_text())
    mfu = [r["mfu"] for r in read_metrics(run)[skip:] if r["mfu"] is not None]
    out: dict[str, Any] = {
        "steps": len(t), "step_s": float(t.mean()), "step_median_s": float(np.median(t)),
        "mean_len": float(L.mean()), "mfu": float(np.mean(mfu)) if mfu else None,
        "peak_memory_gib": summary.get("peak_memory_gib"),
        "graphs_compiled_in_loop": summary.get("graphs_compiled_in_loop"),
        "graphs_compiled": summary.get("graphs_compiled"), "compile_s": summary.get("compile_s"),
    }  # fmt: skip
    if method in ("dd", "concat"):
        ideal = ideal_step_cost(L.tolist(), costs)
        out["ideal_step_s"], out["overhead"] = ideal, float(t.mean()) / ideal - 1
    if method == "dd":  # the whole epoch's mix of lengths, priced at the fixed-shape costs
        steps = {int(b["length"]): int(b["steps"]) for b in summary["loader"]["buckets"]}
        out["epoch_ideal_vs_concat_ideal"] = price_plan(steps, costs, max_len)["ratio"]
        if all(L_ in costs for L_ in DCLM_SHARES) and max_len == max(DCLM_SHARES):
            # steps per bucket are proportional to its token share (tokens per step are fixed)
            dclm = sum(w * costs[L_] for L_, w in DCLM_SHARES.items()) / sum(DCLM_SHARES.values())
            out["dclm_ideal_vs_concat_ideal"] = dclm / costs[max_len]
    return out


def run_method(base: TrainConfig, out: Path) -> dict[str, Any] | str:
    """Train one config; a failure (e.g. out of memory) is recorded, and the table goes on."""
    try:
        torch._dynamo.reset()  # graphs of earlier runs in this process would be reused, uncounted
        train(replace(base, out=str(out)))
        return {"ok": True}
    except Exception as e:  # one failing method must not lose the others' numbers
        traceback.print_exc()
        return f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
    finally:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def step_time_lines(
    table: dict[str, dict[str, Any]], costs: dict[str, Any], skip: int
) -> list[str]:
    """The report's step-time section: fixed-shape costs per length, then the loop's per method."""
    lines = [
        "## Step cost at fixed shapes (no loader, one shape per run)", "",
        "Median seconds of one optimizer step on random tokens at `[tokens/L, L]`, causal "
        "attention, a fresh model; the per-length costs DD's ideal is predicted from.", "",
    ]  # fmt: skip
    for size, c in costs.items():
        if "error" in c:
            lines += [f"- {size}: failed: {c['error']}"]
            continue
        Ls = sorted(c["per_length"], key=int)
        lines += [
            f"| {size} ({c['tokens_per_step']:,} tokens/step) | "
            + " | ".join(str(L) for L in Ls) + " |",
            "|---|" + "---|" * len(Ls),
            "| s/step | " + " | ".join(f"{c['per_length'][L]['median_s']:.4f}" for L in Ls) + " |",
            "",
        ]  # fmt: skip
    lines += [
        "## Step time in the real training loop, equal tokens per step", "",
        f"Mean seconds per step after the first {skip} steps. `ideal` prices each logged step at "
        "its length's fixed-shape cost (above): for DD that is its cost with nothing added, so "
        "`overhead` is what the loader, changing shapes and the loop's bookkeeping add (target: "
        "within 3%); concat's is the same control at one shape. `vs concat` is the ratio of mean "
        "step times at the same size (target for DD: at most 0.80 at 8192). `epoch ideal` prices "
        "DD's whole epoch of lengths, over concat's fixed-shape cost; `DCLM ideal` prices the "
        "bucket token shares of the paper's web data (docs/method.md section 6) the same way. "
        "Rows `@NAME` are step times on another prepared dataset (`--extra-data`).", "",
        "| size/method | mean L | s/step | ideal s/step | overhead | vs concat | epoch ideal "
        "| DCLM ideal | MFU | peak GiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for key, r in table.items():
        if "error" in r:
            lines.append(f"| {key} | - | failed: {r['error']} | | | | | | | |")
            continue
        c = table.get(f"{key.split('/')[0]}/concat", {}).get("step_s")
        ov = r.get("overhead")
        lines.append(
            f"| {key} | {r['mean_len']:.0f} | {r['step_s']:.4f} | "
            f"{fmt(r.get('ideal_step_s'), '.4f')} | {fmt(None if ov is None else 100 * ov, '+.1f')}"
            f"{'%' if ov is not None else ''} | {fmt(r['step_s'] / c if c else None, '.3f')} | "
            f"{fmt(r.get('epoch_ideal_vs_concat_ideal'), '.3f')} | "
            f"{fmt(r.get('dclm_ideal_vs_concat_ideal'), '.3f')} | {fmt(r['mfu'], '.3f')} | "
            f"{fmt(r['peak_memory_gib'], '.1f')} |"
        )
    graphs = {k: r["graphs_compiled_in_loop"] for k, r in table.items() if "error" not in r}
    if any(v is not None for v in graphs.values()):
        lines += ["", f"Graphs compiled inside the timed loops (0: warm-up covered all): {graphs}"]
        ok = {k: r for k, r in table.items() if "error" not in r}
        total = {k: (r["graphs_compiled"], r["compile_s"]) for k, r in ok.items()}
        lines += ["", f"Graphs compiled for the whole run and compile seconds: {total}"]
    return lines


def archive_runs(runs_dir: Path, dest: Path) -> None:
    """Logs of every run (no checkpoints) in one tar.gz, so they come back from a device run."""
    import tarfile

    with tarfile.open(dest, "w:gz") as tar:
        for f in sorted(runs_dir.rglob("*")):
            if f.is_file() and "checkpoints" not in f.parts:
                tar.add(f, arcname=str(f.relative_to(runs_dir.parent)))


def measure_size(
    args: argparse.Namespace, data: Path, size: str, tps: int, methods: list[str], tag: str,
    costs: dict[str, Any], table: dict[str, dict[str, Any]],
) -> None:  # fmt: skip
    """Fixed-shape costs of ``size`` on ``data``'s vocabulary, then each method's loop steps;
    rows are keyed ``size + tag`` and ``size + tag / method``."""
    from ddecomp.data.dataset import open_dataset

    ds = open_dataset(data)
    max_len = min(args.max_len, ds.max_len)
    lengths = [L for L in ds.bucket_lengths if L <= max_len]
    device = "cpu" if args.smoke else "auto"
    dev = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    key = size + tag
    base = TrainConfig(
        data=str(data), out="", size=size, tokens=args.step_steps * tps, tokens_per_step=tps,
        max_len=max_len, warmup=1, device=device, compile=args.compile, eval_tokens=max_len,
        progress=False, checkpoints=False,
    )  # fmt: skip
    try:
        per_len = measure_step_costs(
            base, ds.vocab_size, [*lengths, max_len], dev,
            warmup=args.cost_warmup, iters=args.cost_iters,
        )  # fmt: skip
        costs[key] = {"tokens_per_step": tps, "vocab": ds.vocab_size, "per_length": per_len}
    except Exception as e:  # e.g. out of memory: the loop's numbers still come
        traceback.print_exc()
        costs[key] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
    finally:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    print(key, "fixed-shape costs", costs[key], flush=True)
    medians = {L: c["median_s"] for L, c in costs[key].get("per_length", {}).items()}
    runs_dir = Path(args.runs_dir)
    for m in methods:
        run = runs_dir / f"steps_{size}{tag.replace('@', '_')}_{m}"
        cfg = replace(base, method="dd", layout="flat") if m == FLAT else replace(base, method=m)
        res = run_method(cfg, run)
        if not isinstance(res, dict):
            table[f"{key}/{m}"] = {"error": res}
        else:
            priced = "dd" if m == FLAT else m  # flat DD: the same ideal as rows (causal per L)
            table[f"{key}/{m}"] = summarize_method(
                run, args.skip, priced if medians else "-", max_len, medians
            )
        print(key, m, table[f"{key}/{m}"], flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", required=True, help="prepared dataset (prepared if missing)")
    ap.add_argument("--sizes", default="160m,410m")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--max-len", type=int, default=8192)
    ap.add_argument("--step-steps", type=int, default=40, help="steps per step-time run")
    ap.add_argument("--skip", type=int, default=8, help="first steps excluded from step times")
    ap.add_argument("--cost-iters", type=int, default=5, help="timed fixed-shape steps per length")
    ap.add_argument("--cost-warmup", type=int, default=2, help="untimed fixed-shape steps first")
    ap.add_argument("--train-minutes", type=float, default=0.75, help="concat's training time")
    ap.add_argument("--train-size", default="160m", help="model size of the training runs")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model")
    ap.add_argument("--out", default="benchmarks/results", help="report, JSON, figure, runs.tgz")
    ap.add_argument("--runs", default=None, help="run directories (default: OUT/runs_HW_DATE)")
    ap.add_argument(
        "--extra-data", default="", help="more prepared datasets (comma-separated) for dd and "
        "concat step times only, e.g. a web-like length distribution",
    )  # fmt: skip
    ap.add_argument("--extra-sizes", default="160m", help="model sizes for --extra-data")
    ap.add_argument("--smoke", action="store_true", help="tiny model, few steps, CPU")
    ap.add_argument(
        "--layout", choices=("rows", "flat", "both"), default="rows",
        help="DD's batch layout in the step-time runs: rows (default), flat (one [1, T] stream, "
        "FlexAttention through cu_seqlens, row dd-flat instead of dd) or both",
    )  # fmt: skip
    args = ap.parse_args()

    data = Path(args.data)
    if args.smoke:
        args.sizes, args.train_size, args.step_steps, args.skip = "tiny", "tiny", 6, 2
        args.extra_sizes = "tiny"
        args.cost_iters, args.cost_warmup = 2, 1
    ensure_data(data, args.max_len)
    from ddecomp.data.dataset import open_dataset

    ds = open_dataset(data)
    max_len = min(args.max_len, ds.max_len)
    device = "cpu" if args.smoke else "auto"
    hw, date = hardware(), datetime.date.today().isoformat()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs_dir = Path(args.runs) if args.runs else out / f"runs_{hw}_{date}"
    args.runs_dir = str(runs_dir)
    methods = args.methods.split(",")
    if args.layout != "rows" and "dd" in methods:
        methods.insert(methods.index("dd") + 1, FLAT)
        if args.layout == "flat":
            methods.remove("dd")
    t_start = time.perf_counter()

    costs: dict[str, Any] = {}
    step_table: dict[str, dict[str, Any]] = {}
    for size in args.sizes.split(","):
        tps = TOKENS_PER_STEP[size] if not args.smoke else 2 * max_len
        measure_size(args, data, size, tps, methods, "", costs, step_table)
    for extra in args.extra_data.split(",") if args.extra_data else []:
        for size in args.extra_sizes.split(","):
            tps = TOKENS_PER_STEP[size] if not args.smoke else 2 * max_len
            tag = f"@{Path(extra).name}"
            extra_methods = ["dd", *([FLAT] if FLAT in methods else []), "concat"]
            measure_size(args, Path(extra), size, tps, extra_methods, tag, costs, step_table)

    stem = f"train_{hw}_{date}"
    plot = out / f"{stem}.png"

    def write_report(training: list[str]) -> Path:
        """The report as far as the run got (written after the step times, then again at the
        end, so a run cut off in training still leaves its step-time tables)."""
        lines = [
            f"# Training cost and quality: DD vs baselines ({hw}, {date})", "",
            f"- ddecomp {__version__}, torch {torch.__version__}, python "
            f"{platform.python_version()}, CUDA {torch.version.cuda}, device {hw}"
            f"{' (SMOKE RUN: tiny, CPU)' if args.smoke else ''}",
            f"- data: {data} (fingerprint {ds.fingerprint[:12]}), buckets "
            f"{ds.min_len}..{ds.max_len}, max_len {max_len}, vocab {ds.vocab_size}; compile "
            f"{args.compile}; wall time so far {time.perf_counter() - t_start:.0f} s",
            f"- command: `{' '.join(sys.argv)}`", "",
            *step_time_lines(step_table, costs, args.skip), "", *training,
        ]  # fmt: skip
        report = out / f"{stem}.md"
        report.write_text("\n".join(lines))
        (out / f"{stem}.json").write_text(
            json.dumps({"fixed_shape_costs": costs, "loop": step_table, "argv": sys.argv}, indent=1)
        )
        if runs_dir.exists():
            archive_runs(runs_dir, out / f"{stem}_runs.tar.gz")
        print(f"wrote {report}", flush=True)
        return report

    write_report(["## Training at equal tokens", "", "(not reached yet)", ""])

    # training at equal tokens: the budget that takes concat about --train-minutes
    size = args.train_size
    tps = TOKENS_PER_STEP[size] if not args.smoke else 2 * max_len
    sec = step_table.get(f"{size}/concat", {}).get("step_s") or 1.0
    steps = 12 if args.smoke else max(50, int(args.train_minutes * 60 / sec))
    train_runs = []
    # concat first: it is the baseline of the comparison (time to reach its final val loss)
    # (dd-flat trains DD's steps with the same gradients: its step times above are the point)
    for m in sorted((m for m in methods if m != FLAT), key=lambda x: x != "concat"):
        cfg = TrainConfig(
            data=str(data), out="", method=m, size=size, tokens=steps * tps, tokens_per_step=tps,
            max_len=max_len, warmup=max(1, steps // 20), device=device, compile=args.compile,
            eval_every=max(1, steps // 5), progress=False, checkpoints=False,
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
    if loaded:
        plot_runs(loaded, plot)
    write_report([
        f"## Training at equal tokens ({size}, {steps} steps x {tps:,} tokens)", "",
        table, "", f"Figure: `{plot.name}`. Run logs: `{stem}_runs.tar.gz`.", "",
    ])  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
