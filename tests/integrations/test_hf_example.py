"""examples/hf_trainer.py runs as a user runs it: a fresh process on a prepared dataset, then a
resume from its own checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers")

from ddecomp.preparing.pipeline import TokensConfig, prepare_tokens
from tests._fixtures import random_lengths, run_python

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "hf_trainer.py"
EOS = 1000


@pytest.mark.slow
def test_hf_trainer_example_trains_evaluates_and_resumes(tmp_path: Path) -> None:
    lens = random_lengths(400, 1, lo=3, hi=3000)
    toks = np.random.default_rng(1).integers(0, EOS, size=int(lens.sum()))
    toks[np.cumsum(lens) - 1] = EOS
    data = tmp_path / "data"
    prepare_tokens(TokensConfig(toks, data, eos_id=EOS, vocab_size=EOS + 1, min_len=16,
                                max_len=512, val_fraction=0.1))  # fmt: skip
    common = [str(EXAMPLE), str(data), "--out", str(tmp_path / "run"), "--steps", "6",
              "--tokens-per-step", "1024"]  # fmt: skip
    r = run_python(*common, env={"CUDA_VISIBLE_DEVICES": ""})
    assert r.returncode == 0, r.stderr[-3000:]
    assert "'eval_loss'" in r.stdout
    assert r.stdout.strip().splitlines()[-1].startswith("done: 6 steps")
    assert (tmp_path / "run" / "checkpoint-6" / "ddecomp_loader_state.json").is_file()
    (tmp_path / "run" / "checkpoint-6").rename(tmp_path / "run" / "later")  # resume from step 3
    r = run_python(*common, "--resume", env={"CUDA_VISIBLE_DEVICES": ""})
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip().splitlines()[-1].startswith("done: 6 steps")
    assert "loader state 0:6" in r.stdout
