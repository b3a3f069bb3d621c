"""Scoring at both ends (a perfect retriever scores 100%, a context-blind model scores chance)
and on a trained run (deterministic, written atomically, drawn by compare)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ddecomp.cli import main
from ddecomp.evaluation.runmodel import evaluate_run
from ddecomp.evaluation.scoring import choice_scores, credit, run_task
from ddecomp.evaluation.tasks import KEY_TOKENS, Example, Haystack
from ddecomp.training.loop import train
from tests.training._corpus import cfg_for, make_dataset

CPU = torch.device("cpu")
V = 64
EOS = 63


def _hay() -> Haystack:
    rng = np.random.default_rng(1)
    docs = [np.r_[rng.integers(0, 60, int(rng.integers(5, 300))), EOS] for _ in range(40)]
    return Haystack.from_documents(docs, (EOS,))


def retriever(x: torch.Tensor) -> torch.Tensor:
    """A test double of a model that retrieves perfectly: the rows share a prompt ending in a
    K-token query; it finds the query's earlier occurrence and favours the K tokens after it."""
    B, T = x.shape
    K = KEY_TOKENS
    P = T - K + 1  # prompt length: the input holds the prompt and the answer but its last token
    row = x[0].numpy()
    query = row[P - K : P]
    w = np.lib.stride_tricks.sliding_window_view(row[: P - K], K)
    q = int(np.flatnonzero((w == query).all(axis=1))[0])
    logits = torch.zeros(B, T, V)
    for t in range(K):
        logits[:, P - 1 + t, int(row[q + K + t])] = 10.0
    return logits


def blind(x: torch.Tensor) -> torch.Tensor:
    return torch.zeros(*x.shape, V)


@pytest.mark.parametrize("task", ["passkey", "kv-retrieval"])
def test_a_perfect_retriever_scores_all_and_a_blind_model_scores_chance(task: str) -> None:
    hay = _hay()
    args = (task, hay, [128, 512], [0.0, 0.5, 1.0], 6, 0, 4, CPU)
    top = run_task(retriever, *args)
    assert top["examples"] == 36
    assert top["accuracy_mean"] == 1.0
    assert all(v == 1.0 for row in top["accuracy"].values() for v in row.values())
    low = run_task(blind, *args)
    assert all(v == 0.25 for row in low["accuracy"].values() for v in row.values())
    assert low["chance"] == 0.25


def test_choice_scores_are_summed_log_likelihoods_of_the_answer_tokens() -> None:
    g = torch.Generator().manual_seed(0)
    table = torch.randn(V, V, generator=g)

    def bigram(x: torch.Tensor) -> torch.Tensor:
        return table[x]  # logits of the next token depend on the current one

    ex = Example(np.array([5, 9, 2, 7]), np.array([[1, 2, 3, 4], [4, 3, 2, 1]]), 1, 0.0)
    got = choice_scores(bigram, ex, CPU)
    logp = torch.log_softmax(table, dim=-1).double()
    for c, cand in enumerate(ex.candidates):
        prev = [7, *cand[:-1]]
        want = sum(float(logp[a, b]) for a, b in zip(prev, cand, strict=True))
        assert got[c] == pytest.approx(want, rel=1e-12)
    assert credit(np.array([1.0, 3.0, 3.0]), 1) == 0.5
    assert credit(np.array([1.0, 3.0, 2.0]), 2) == 0.0


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("evalrun")
    data = make_dataset(root / "ds", n_tokens=60_000, val_fraction=0.1)
    train(cfg_for(data, root / "run", tokens=8 * 1024))
    return root


@pytest.mark.slow  # end to end: train, eval twice, the CLI, compare with its figure
def test_a_trained_run_scores_deterministically_and_compare_draws_it(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = trained / "run"
    a = evaluate_run(run, "passkey", [64, 128], [0.0, 1.0], samples=4, seed=3)
    b = evaluate_run(run, "passkey", [64, 128], [0.0, 1.0], samples=4, seed=3)
    assert a["accuracy"] == b["accuracy"]
    assert a["examples"] == 16
    assert a["step"] == 8
    written = json.loads((run / "eval_passkey.json").read_text())
    assert written["accuracy"] == a["accuracy"]
    assert not list(run.glob("*.tmp*"))  # written through a temporary name, renamed
    code = main(["eval", str(run), "--task", "kv-retrieval", "--lengths", "128", "--samples", "2"])
    assert code == 0
    out = capsys.readouterr().out
    assert "kv-retrieval" in out
    assert "eval_kv-retrieval.json" in out
    assert main(["compare", str(run), "--plot", str(tmp_path / "c.png")]) == 0
    table = capsys.readouterr().out
    assert "passkey: accuracy per context length" in table
    assert "kv-retrieval" in table
    assert (tmp_path / "c.png").stat().st_size > 0


def test_a_dataset_without_a_val_split_is_one_line(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    no_val = make_dataset(tmp_path / "noval", n_tokens=5_000, val_fraction=0.0)
    code = main(["eval", str(trained / "run"), "--task", "passkey", "--data", str(no_val)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1
    assert "no validation split" in err
    code = main(["eval", str(tmp_path), "--task", "passkey"])
    assert code == 2
    assert "not a training run" in capsys.readouterr().err
