import json

import numpy as np
import pytest

from ddecomp.cli import main
from ddecomp.prepare import prepare_tokens


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    rng = np.random.default_rng(0)
    lens = rng.integers(20, 2000, size=400)
    toks = np.arange(int(lens.sum()), dtype=np.uint32) % 1000
    toks[np.cumsum(lens) - 1] = 1000
    root = tmp_path_factory.mktemp("plan")
    prepare_tokens(toks, root, eos_id=1000, min_len=16, max_len=512)
    return root


def test_plan_prints_steps_per_bucket_and_cost(data_dir, capsys):
    assert main(["plan", str(data_dir), "--tokens-per-step", "4096", "--cycles", "4"]) == 0
    out = capsys.readouterr().out
    assert "steps x 4,096 tokens" in out
    assert "rows left out" in out
    assert "predicted step cost" in out
    assert "always-512" in out


def test_plan_json_matches_the_library(data_dir, capsys):
    from ddecomp.dataset import open_dataset
    from ddecomp.plan import build_plan

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
