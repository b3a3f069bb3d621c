"""The examples run as a user runs them: a fresh process on a prepared dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ddecomp.preparing.pipeline import TokensConfig, prepare_tokens
from tests._fixtures import random_lengths, run_python

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "plain_loop.py"
EOS = 1000


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    out = []
    for seed, hi in ((1, 3000), (2, 400)):  # long and short documents: two length mixes
        lens = random_lengths(300, seed, lo=3, hi=hi)
        toks = np.random.default_rng(seed).integers(0, EOS, size=int(lens.sum()))
        toks[np.cumsum(lens) - 1] = EOS
        root = tmp_path_factory.mktemp(f"ex{seed}")
        prepare_tokens(
            TokensConfig(toks, root, eos_id=EOS, vocab_size=EOS + 1, min_len=16, max_len=512)
        )
        out.append(root)
    return out


@pytest.mark.parametrize("blend", [False, True])
def test_plain_loop_trains_and_reports_its_loader_state(dirs: list[Path], blend: bool) -> None:
    data = [str(d) for d in dirs] if blend else [str(dirs[0])]
    extra = ["--shares", "0.5,0.5"] if blend else []
    r = run_python(str(EXAMPLE), *data, *extra, "--steps", "10", "--tokens-per-step", "1024",
                   env={"CUDA_VISIBLE_DEVICES": ""})  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.strip().splitlines()
    assert lines[0].startswith("Blend(" if blend else "Dataset(")
    losses = [float(x.split("loss ")[1]) for x in lines if x.startswith("step ")]
    assert len(losses) == 1  # printed every 10 steps
    assert all(np.isfinite(losses))
    assert lines[-1].startswith("done: 10 steps; loader state ")
