"""A trained run as an lm-evaluation-harness model, on local task files (no hub, no network)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip("lm_eval")

WORDS = [
    "the",
    "cat",
    "dog",
    "sat",
    "ran",
    "on",
    "a",
    "mat",
    "log",
    "red",
    "blue",
    "big",
    "small",
    "and",
    "then",
    "it",
    "was",
]


def _text_dataset(root: Path) -> Path:
    from ddecomp.preparing.config import PrepareConfig
    from ddecomp.preparing.pipeline import prepare

    src = root / "text"
    src.mkdir()
    rng = np.random.default_rng(0)
    for i in range(80):
        words = rng.choice(WORDS, size=int(rng.integers(20, 160)))
        (src / f"doc{i:03d}.txt").write_text(" ".join(words) + ".\n")
    out = root / "ds"
    prepare(
        PrepareConfig(
            out=out, inputs=(str(src),), vocab_size=300, min_len=8, max_len=64,
            val_fraction=0.2, workers=1, quiet=True,
        )
    )  # fmt: skip
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ddecomp.training.loop import train
    from tests.training._corpus import cfg_for

    root = tmp_path_factory.mktemp("lmeval")
    data = _text_dataset(root)
    train(cfg_for(data, root / "run", tokens=4 * 1024))
    return root / "run"


class _Req:
    """What lm-eval hands a model: an object with ``args``."""

    def __init__(self, *args: str) -> None:
        self.args = args


def test_loglikelihoods_are_the_gpts_own(run: Path) -> None:
    from ddecomp.evaluation.lm_eval_model import DDecompLM

    lm = DDecompLM(run=str(run), max_length=16)
    assert lm.max_length == 16
    ctx, cont = "the cat sat on", " a mat"
    (ll, greedy), (ll_empty, _) = lm.loglikelihood([_Req(ctx, cont), _Req("", "the cat")])
    ids = lm.start + lm._encode(ctx + cont)
    n = len(ids) - len(lm.start + lm._encode(ctx))
    assert n > 0
    with torch.no_grad():
        logp = torch.log_softmax(lm.model(torch.tensor([ids[:-1]]))[0].float(), dim=-1)
    want = sum(float(logp[i - 1, ids[i]]) for i in range(len(ids) - n, len(ids)))
    assert ll == pytest.approx(want, rel=1e-5)
    assert isinstance(greedy, bool)
    # rolling = the whole text from the document start; a short text is one window
    (roll,) = lm.loglikelihood_rolling([_Req("the cat")])
    assert roll == pytest.approx(ll_empty, rel=1e-5)
    # a long text is cut in windows of max_length predictions, each with full context
    long_text = " ".join(["the big red dog ran"] * 12)
    (roll_long,) = lm.loglikelihood_rolling([_Req(long_text)])
    toks = lm.start + lm._encode(long_text)
    assert len(toks) > 3 * lm.max_length  # vacuity guard: several windows
    total, done = 0.0, 1
    while done < len(toks):
        upto = min(done + 16, len(toks))
        inputs = toks[: upto - 1][-16:]
        with torch.no_grad():
            lp = torch.log_softmax(lm.model(torch.tensor([inputs]))[0].float(), dim=-1)
        k = upto - done
        total += sum(float(lp[len(inputs) - k + j, toks[done + j]]) for j in range(k))
        done = upto
    assert roll_long == pytest.approx(total, rel=1e-5)
    with pytest.raises(Exception, match="does not generate"):
        lm.generate_until([_Req("the", "")])


@pytest.mark.slow  # end to end through lm-eval's evaluator and the datasets library
def test_lm_eval_runs_a_local_task_on_the_run(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import lm_eval
    from lm_eval.tasks import TaskManager

    from ddecomp.evaluation.lm_eval_model import DDecompLM

    docs: list[dict[str, Any]] = [
        {"question": "the cat sat on the", "choices": [" mat", " blue", " then"], "label": 0},
        {"question": "the dog ran on a", "choices": [" log", " and", " it"], "label": 0},
        {"question": "a big red", "choices": [" dog", " was", " on"], "label": 0},
        {"question": "it was", "choices": [" small", " the", " sat"], "label": 0},
    ]
    data = tmp_path / "mc.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in docs))
    (tmp_path / "ddtest_mc.yaml").write_text(
        f"task: ddtest_mc\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
        f"    test: {data}\noutput_type: multiple_choice\ntest_split: test\n"
        "doc_to_text: '{{question}}'\ndoc_to_choice: '{{choices}}'\ndoc_to_target: label\n"
        "target_delimiter: ''\nmetric_list:\n  - metric: acc\n    aggregation: mean\n"
        "    higher_is_better: true\nmetadata:\n  version: 1.0\n"
    )
    text = tmp_path / "ppl.jsonl"
    text.write_text("".join(json.dumps({"content": d["question"] + " mat"}) + "\n" for d in docs))
    (tmp_path / "ddtest_ppl.yaml").write_text(
        f"task: ddtest_ppl\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
        f"    test: {text}\noutput_type: loglikelihood_rolling\ntest_split: test\n"
        "doc_to_text: ''\ndoc_to_target: '{{content}}'\ntarget_delimiter: ''\nmetric_list:\n"
        "  - metric: word_perplexity\n    aggregation: weighted_perplexity\n"
        "    higher_is_better: false\nmetadata:\n  version: 1.0\n"
    )
    out: Any = lm_eval.simple_evaluate(
        model="ddecomp",
        model_args=f"run={run},device=cpu",
        tasks=["ddtest_mc", "ddtest_ppl"],
        task_manager=TaskManager(include_path=str(tmp_path)),
        bootstrap_iters=0,
        log_samples=False,
    )
    res = out["results"]
    acc = res["ddtest_mc"]["acc,none"]
    # the same answer from the model directly: argmax of the choices' loglikelihoods
    lm = DDecompLM(run=str(run))
    mine = []
    for d in docs:
        lls = [ll for ll, _ in lm.loglikelihood([_Req(d["question"], c) for c in d["choices"]])]
        mine.append(float(np.argmax(lls) == d["label"]))
    assert acc == pytest.approx(np.mean(mine))
    ppl = res["ddtest_ppl"]["word_perplexity,none"]
    assert math.isfinite(ppl)
    assert ppl > 1
