"""``ddecomp compare``: table values from the runs' own logs, interpolated time to a target."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from ddecomp.errors import UserError
from ddecomp.reporting.compare import compare, format_table, load_run, time_to_reach
from ddecomp.reporting.plots import plot_runs
from ddecomp.training.loop import train
from tests._fixtures import run_python
from tests.training._corpus import TPS, cfg_for, make_dataset


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("cmp")
    data = make_dataset(root / "ds", n_tokens=60_000)
    for m in ("concat", "dd"):
        train(cfg_for(data, root / m, method=m, tokens=8 * TPS, warmup=1, eval_every=2))
    return data, root / "concat", root / "dd"


def test_rows_come_from_the_logs(runs: tuple[Path, Path, Path]) -> None:
    _, concat, dd = runs
    base, other = load_run(concat), load_run(dd)
    rows = compare([base, other])
    assert [r["method"] for r in rows] == ["concat", "dd"]
    for r, run in zip(rows, (base, other), strict=True):
        m = run.metrics
        assert r["tokens"] == 8 * TPS == m[-1]["tokens"]
        assert r["us_per_token"] == pytest.approx(1e6 * m[-1]["elapsed_s"] / (8 * TPS))
        assert r["val_loss"] == run.evals[-1]["val_loss_mean"]
        assert r["mean_seq_len"] == pytest.approx(sum(x["seq_len"] for x in m) / len(m))
    assert rows[0]["time_per_token_vs_base"] == 1.0
    assert rows[0]["time_to_base_val_ratio"] == pytest.approx(1.0)
    assert rows[1]["mean_seq_len"] < rows[0]["mean_seq_len"] == 128
    table = format_table(rows)
    assert table.count("\n") == 3
    assert "| concat | concat |" in table


def test_time_to_reach_interpolates_between_evaluations(runs: tuple[Path, Path, Path]) -> None:
    run = load_run(runs[1])
    ev = run.evals
    assert len(ev) == 4
    assert ev[0]["val_loss_mean"] > ev[1]["val_loss_mean"]  # vacuity guard: the loss falls
    assert time_to_reach(run, ev[1]["val_loss_mean"]) == pytest.approx(ev[1]["elapsed_s"])
    mid = (ev[0]["val_loss_mean"] + ev[1]["val_loss_mean"]) / 2
    t = time_to_reach(run, mid)
    assert t is not None
    assert ev[0]["elapsed_s"] < t < ev[1]["elapsed_s"]
    assert time_to_reach(run, min(e["val_loss_mean"] for e in ev) - 1) is None


def test_refuses_runs_on_other_data(runs: tuple[Path, Path, Path], tmp_path: Path) -> None:
    data2 = make_dataset(tmp_path / "ds2", n_tokens=30_000)
    train(cfg_for(data2, tmp_path / "r", tokens=2 * TPS, warmup=1))
    with pytest.raises(UserError, match="another dataset"):
        compare([load_run(runs[1]), load_run(tmp_path / "r")])
    with pytest.raises(UserError, match=r"no config\.json"):
        load_run(tmp_path)


def test_cli_prints_the_table_and_writes_the_plot(
    runs: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    _, concat, dd = runs
    png = tmp_path / "c.png"
    r = run_python("-m", "ddecomp", "compare", str(concat), str(dd), "--plot", str(png))
    assert r.returncode == 0, r.stderr
    assert "| dd | dd |" in r.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    j = run_python("-m", "ddecomp", "compare", str(dd), "--json")
    assert json.loads(j.stdout)[0]["method"] == "dd"


def test_plot_refuses_a_non_png_name(runs: tuple[Path, Path, Path], tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"must end in \.png"):
        plot_runs([load_run(runs[1])], tmp_path / "c.jpg")


@pytest.mark.slow
def test_gpu_bench_smoke_runs_end_to_end_on_cpu(
    runs: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    bench = Path(__file__).parents[2] / "benchmarks" / "gpu_train_bench.py"
    data = str(runs[0])
    r = run_python(
        str(bench), "--data", data, "--extra-data", data, "--smoke", "--out", str(tmp_path)
    )
    assert r.returncode == 0, r.stderr[-3000:]
    (report,) = tmp_path.glob("train_*.md")
    text = report.read_text()
    for m in ("tiny/dd", "tiny/concat", "tiny/concat-dm", "tiny/pack", f"tiny@{runs[0].name}/dd"):
        assert f"| {m} |" in text
    assert "failed" not in text, text
    assert "| train_tiny_dd | dd |" in text
    numbers = json.loads(next(tmp_path.glob("train_*.json")).read_text())
    costs = numbers["fixed_shape_costs"]["tiny"]["per_length"]
    assert sorted(map(int, costs)) == [16, 32, 64, 128]  # every bucket length, max_len included
    dd = numbers["loop"]["tiny/dd"]
    assert dd["ideal_step_s"] > 0
    assert "ideal_step_s" not in numbers["loop"]["tiny/pack"]  # no causal ideal under a mask
    (logs,) = tmp_path.glob("train_*_runs.tar.gz")
    with tarfile.open(logs) as tar:
        names = tar.getnames()
        (summary_name,) = [n for n in names if n.endswith("steps_tiny_dd/summary.json")]
        summary_file = tar.extractfile(summary_name)
        assert summary_file is not None
        buckets = json.load(summary_file)["loader"]["buckets"]
    assert any(n.endswith("train_tiny_dd/metrics.jsonl") for n in names)
    assert not [n for n in names if "checkpoints" in n]
    # The price is the step-time run's own plan (DD plans the run: steps per bucket) at the
    # measured costs; timings on a shared 2-core runner are noise at these sizes, so the check
    # is arithmetic, not a bound.
    cost = {int(L): float(c["median_s"]) for L, c in costs.items()}
    steps = {int(b["length"]): int(b["steps"]) for b in buckets}
    assert len([n for n in steps.values() if n]) > 1  # vacuity guard: a real mix of lengths
    priced = sum(n * cost[L] for L, n in steps.items()) / (sum(steps.values()) * cost[128])
    assert dd["epoch_ideal_vs_concat_ideal"] == pytest.approx(priced, rel=1e-9)


def test_runs_evaluated_only_at_the_end_get_no_time_to_loss(tmp_path: Path) -> None:
    # Issue 12 item 1: with one final evaluation, "time to the baseline's loss" was each run's
    # own length and printed as a ratio. Now it is absent and the table says why.
    data = make_dataset(tmp_path / "ds", n_tokens=60_000)
    for m in ("concat", "dd"):
        train(cfg_for(data, tmp_path / m, method=m, tokens=4 * TPS, warmup=1))
    runs = [load_run(tmp_path / m) for m in ("concat", "dd")]
    assert [len(r.evals) for r in runs] == [1, 1]  # vacuity guard: evaluated, once
    rows = compare(runs)
    assert [r["time_to_base_val_ratio"] for r in rows] == [None, None]
    assert all("evaluated only at its end" in r["time_to_base_val_note"] for r in rows)
    table = format_table(rows)
    assert "note: no time to the baseline's loss for dd: it was evaluated only at its end" in table
    png = tmp_path / "c.png"
    r = run_python("-m", "ddecomp", "compare", *(str(tmp_path / m) for m in ("concat", "dd")),
                   "--plot", str(png))  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "--eval-every" in r.stdout
    assert "Warning" not in r.stderr  # no matplotlib warning leaks (an empty legend was one)


def test_a_run_without_validation_compares_without_warnings(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "ds", n_tokens=60_000, val_fraction=0.0)
    train(cfg_for(data, tmp_path / "r", tokens=2 * TPS, warmup=1))
    rows = compare([load_run(tmp_path / "r")])
    assert rows[0]["val_loss"] is None
    assert "has no evaluation" in rows[0]["time_to_base_val_note"]
    r = run_python("-m", "ddecomp", "compare", str(tmp_path / "r"), "--plot",
                   str(tmp_path / "c.png"))  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""  # the empty panels' legends used to warn here
    assert "has no evaluation" in r.stdout
