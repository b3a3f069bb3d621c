"""``examples/olmo_core_trainer.py`` runs as a user runs it: a fresh process, OLMo-core's own
Trainer, preempted and resumed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ddecomp.preparing.pipeline import TokensConfig, prepare_tokens
from tests._fixtures import random_lengths, run_python

pytest.importorskip("olmo_core")

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "olmo_core_trainer.py"
EOS = 1000


@pytest.mark.slow
def test_olmo_core_example_is_preempted_and_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    lens = random_lengths(300, 1, lo=3, hi=3000)
    toks = np.random.default_rng(1).integers(0, EOS, size=int(lens.sum()))
    toks[np.cumsum(lens) - 1] = EOS
    prepare_tokens(TokensConfig(toks, tmp_path / "ds", eos_id=EOS, vocab_size=EOS + 1, min_len=16,
                                max_len=512))  # fmt: skip
    args = [str(EXAMPLE), str(tmp_path / "ds"), "--steps", "10", "--tokens-per-step", "1024",
            "--save", str(tmp_path / "run")]  # fmt: skip
    env = {"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    r = run_python(*args, "--stop-at", "4", env=env)  # preempted at step 4 (checkpointed)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip().splitlines()[-1].startswith("done: 4 steps; loader state 0:4;")
    r = run_python(
        *args, env=env
    )  # the same command: resumes at step 5 from OLMo-core's checkpoint
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.strip().splitlines()
    assert lines[0].startswith("Dataset(")
    losses = [float(x.split("loss ")[1]) for x in lines if x.startswith("step ")]
    assert len(losses) == 1  # printed every 10 steps
    assert all(np.isfinite(losses))
    assert lines[-1].startswith("done: 10 steps; loader state 0:10;")
