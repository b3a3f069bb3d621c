import json

import numpy as np
import pytest

from ddecomp.cli import main
from ddecomp.preparing.pipeline import TokensConfig, prepare_tokens


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    rng = np.random.default_rng(0)
    lens = rng.integers(20, 2000, size=400)
    toks = np.arange(int(lens.sum()), dtype=np.uint32) % 1000
    toks[np.cumsum(lens) - 1] = 1000
    root = tmp_path_factory.mktemp("plan")
    prepare_tokens(TokensConfig(toks, root, eos_id=1000, min_len=16, max_len=512))
    return root


def test_plan_prints_steps_per_bucket_and_cost(data_dir, capsys):
    assert main(["plan", str(data_dir), "--tokens-per-step", "4096", "--cycles", "4"]) == 0
    out = capsys.readouterr().out
    assert "steps x 4,096 tokens" in out
    assert "rows left out" in out
    assert "predicted step cost" in out
    assert "always-512" in out


def test_plan_json_matches_the_library(data_dir, capsys):
    from ddecomp.data.dataset import open_dataset
    from ddecomp.loading.plan import build_plan

    argv = ["plan", str(data_dir), "--tokens-per-step", "4096", "--json", "--seed", "3"]
    assert main([*argv, "--curriculum", "8,4,4,2,2,1", "--mode", "layout"]) == 0
    s = json.loads(capsys.readouterr().out)
    ds = open_dataset(data_dir)
    p = build_plan(ds.bucket_rows, 4096, [8, 4, 4, 2, 2, 1], 8, 3, 0, "layout")
    assert s["steps"] == len(p) > 0
    assert s["curriculum"] == [8, 4, 4, 2, 2, 1]
    assert [b["steps"] for b in s["buckets"]] == [p.batches(L) for L in p.lengths]


def test_plan_writes_a_plot(data_dir, tmp_path, capsys):
    png = tmp_path / "plan.png"
    assert main(["plan", str(data_dir), "--tokens-per-step", "4096", "--plot", str(png)]) == 0
    assert png.stat().st_size > 1000


def test_plan_refuses_bad_arguments_with_one_line(data_dir, capsys):
    argv = ["plan", str(data_dir), "--tokens-per-step", "4096", "--world-size", "3"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert "use a multiple of 1536" in err
    assert main(["plan", str(data_dir), "--tokens-per-step", "4096", "--curriculum", "x"]) == 2
    assert "unknown curriculum 'x'" in capsys.readouterr().err


def test_plan_measure_prices_the_epoch_with_measured_costs(data_dir, capsys):
    argv = ["plan", str(data_dir), "--tokens-per-step", "4096", "--measure", "tiny"]
    assert main([*argv, "--device", "cpu", "--iters", "1", "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    m = s["measured"]
    planned = {str(b["length"]): b["steps"] for b in s["buckets"] if b["steps"]}
    assert m["steps_per_length"] == planned
    assert len(planned) >= 3  # vacuity: several lengths are priced
    assert set(m["median_s"]) == {*planned, str(s["max_seq_len"])}
    cost = {int(L): t for L, t in m["median_s"].items()}
    dd = sum(n * cost[int(L)] for L, n in planned.items())
    assert m["dd_s"] == pytest.approx(dd)
    assert m["baseline_s"] == pytest.approx(s["steps"] * cost[s["max_seq_len"]])
    assert m["ratio"] == pytest.approx(dd / m["baseline_s"])
    assert main([*argv, "--device", "cpu", "--iters", "1"]) == 0
    out = capsys.readouterr().out
    assert "measured step cost (tiny model, cpu, 4,096 tokens per device step" in out
    assert "(concat-and-chunk)" in out


def test_plan_of_several_datasets_plans_their_blend(data_dir, tmp_path, capsys):
    from ddecomp.data.blend import Blend
    from ddecomp.loading.plan import build_plan

    rng = np.random.default_rng(1)
    lens = rng.integers(20, 300, size=300)  # short documents: a different length mix
    toks = np.arange(int(lens.sum()), dtype=np.uint32) % 1000
    toks[np.cumsum(lens) - 1] = 1000
    short = tmp_path / "short"
    prepare_tokens(TokensConfig(toks, short, eos_id=1000, vocab_size=1001, min_len=16, max_len=512))
    argv = ["plan", str(data_dir), str(short), "--tokens-per-step", "4096"]
    assert main([*argv, "--shares", "0.5,0.5"]) == 0
    out = capsys.readouterr().out
    assert "blend of 2 datasets (seed 0):" in out
    assert out.count(f"%  {data_dir}") == out.count(f"%  {short}") == 1  # a share per source
    assert main([*argv, "--shares", "0.5,0.5", "--json"]) == 0
    shares = [x["share"] for x in json.loads(capsys.readouterr().out)["blend"]["sources"]]
    assert shares == pytest.approx([0.5, 0.5], abs=0.01)
    assert main([*argv, "--factors", "1,2", "--json", "--seed", "4"]) == 0
    s = json.loads(capsys.readouterr().out)
    blend = Blend([(data_dir, 1.0), (short, 2.0)], seed=4)
    assert s["blend"] == json.loads(json.dumps(blend.summary()))
    p = build_plan(blend.bucket_rows, 4096, "grow-p2", 8, 4, 0)
    assert s["steps"] == len(p) > 0
    assert [b["rows"] for b in s["buckets"]] == [blend.bucket_rows[L] for L in p.lengths]
    assert main([*argv, "--factors", "1"]) == 2
    assert "1 blend factors for 2 datasets; give one per dataset" in capsys.readouterr().err
    with pytest.raises(SystemExit) as both:
        main([*argv, "--factors", "1,1", "--shares", "0.5,0.5"])
    assert both.value.code == 2
    assert "argument --shares: not allowed with argument --factors" in capsys.readouterr().err
    # Shares that do not sum to 1 were silently renormalised (issue 12 item 7): a typo, refused.
    with pytest.raises(SystemExit) as typo:
        main([*argv, "--shares", "0.7,0.4"])
    assert typo.value.code == 2
    assert "'0.7,0.4' sums to 1.1, not 1" in capsys.readouterr().err


def test_plan_tokens_plans_the_run(data_dir, tmp_path, capsys):
    from ddecomp.data.dataset import open_dataset
    from ddecomp.loading.plan import build_plan

    ds = open_dataset(data_dir)
    data = sum(L * n for L, n in ds.bucket_rows.items())
    total = int(2.5 * data)
    argv = ["plan", str(data_dir), "--tokens-per-step", "4096", "--tokens", str(total)]
    assert main([*argv, "--json", "--seed", "2"]) == 0
    s = json.loads(capsys.readouterr().out)
    p = build_plan(ds.bucket_rows, 4096, "grow-p2", 8, 2, 0, total_tokens=total)
    assert s["steps"] == len(p) == total // 4096 > 50
    assert s["total_tokens"] == total
    assert [b["steps"] for b in s["buckets"]] == [p.batches(L) for L in p.lengths]
    passes = [b["passes"] for b in s["buckets"] if b["rows"] >= 4096 // b["length"]]
    assert len(passes) >= 3
    assert min(passes) > 2.0  # every bucket with a whole batch is repeated about 2.5 times
    assert s["mean_seq_len_by_tenth"] == pytest.approx(p.length_by_part(10).tolist())
    assert s["predicted_s"] > 0
    png = tmp_path / "run.png"
    assert main([*argv, "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert f"(the run of {total:,} tokens)" in out
    assert "passes" in out
    assert "mean sequence length per tenth of the plan:" in out
    assert "predicted time at that fit" in out
    assert png.stat().st_size > 1000
    assert main([*argv[:-1], "100"]) == 2
    assert "less than one step of 4,096 tokens" in capsys.readouterr().err


def test_train_plans_the_run_so_curriculum_and_schedule_end_together(data_dir, tmp_path):
    import argparse

    from ddecomp.cli.train import config_from_args, register
    from ddecomp.data.dataset import open_dataset
    from ddecomp.loading.world import World
    from ddecomp.training.builders import build_loader

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    ds = open_dataset(data_dir)
    data = sum(L * n for L, n in ds.bucket_rows.items())
    for scale in (0.3, 3.0):  # shorter and longer than the data: one plan, the run's steps
        tokens = int(scale * data) // 4096 * 4096
        args = parser.parse_args(
            ["train", str(data_dir), "--out", str(tmp_path / "r"), "--tokens", str(tokens),
             "--tokens-per-step", "4096", "--warmup", "1", "--cycles", "4"]
        )  # fmt: skip
        cfg = config_from_args(args)
        assert cfg.mode == "release"
        loader = build_loader(cfg, ds, ds.max_len, World(0, 1))
        assert len(loader) == cfg.steps > 4
        assert loader.plan.total_tokens == tokens
        assert set(loader.plan.step_cycle.tolist()) == set(range(4))  # all cycles in the run
    args = parser.parse_args(["train", str(data_dir), "--out", "r", "--mode", "olmo-layout"])
    assert config_from_args(args).mode == "olmo-layout"
