"""Per-source metrics of the reference trainer on a 3-source blend."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from ddecomp import Blend, VSLLoader
from ddecomp.cli import main
from ddecomp.loading.protocols import IGNORE_INDEX
from ddecomp.loading.world import World
from ddecomp.reporting.compare import load_run
from ddecomp.reporting.sources import source_rows
from ddecomp.training.loop import train
from ddecomp.training.model import GPT, model_config
from ddecomp.training.sources import SourceMetrics, source_names
from ddecomp.training.step import train_step
from tests.training._corpus import TPS, cfg_for, make_dataset


@pytest.fixture(scope="module")
def three(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, ...]:
    root = tmp_path_factory.mktemp("three")
    sizes = (60_000, 30_000, 20_000)
    return tuple(str(make_dataset(root / f"s{i}", n, seed=i)) for i, n in enumerate(sizes))


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


@pytest.mark.slow  # three short training runs: ~25 s on an idle 2-core machine
def test_per_source_metrics_add_up_and_survive_resume(
    three: tuple[str, ...], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kw = dict(factors=(1.0, 0.5, 2.0), checkpoint_every=4, eval_every=6)
    train(cfg_for(three, tmp_path / "full", **kw))
    part = cfg_for(three, tmp_path / "part", **kw)
    train(replace(part, stop_after=5))
    train(replace(part, resume=True))
    a, b = _jsonl(tmp_path / "full" / "metrics.jsonl"), _jsonl(tmp_path / "part" / "metrics.jsonl")
    names = ["s0", "s1", "s2"]
    assert len(a) == 16
    used = set()
    for r in a:
        assert list(r["source_targets"]) == names
        assert sum(r["source_targets"].values()) == TPS  # every target of the step, once
        for n in names:
            if r["source_targets"][n]:
                used.add(n)
                assert r["source_loss"][n] > 0
            else:
                assert r["source_loss"][n] is None
        mean = sum(
            r["source_loss"][n] * r["source_targets"][n] for n in names if r["source_targets"][n]
        )
        assert mean / TPS == pytest.approx(r["loss"], rel=1e-5)  # the step's loss, split
    assert used == set(names)
    assert [(r["source_loss"], r["source_targets"]) for r in a] == [
        (r["source_loss"], r["source_targets"]) for r in b
    ]
    ev = _jsonl(tmp_path / "full" / "eval.jsonl")[-1]
    assert set(ev["val_loss_by_source"]) == set(names)
    for L, n in ev["val_tokens"].items():  # per length, the sources' held-out targets add up
        assert sum(t.get(L, 0) for t in ev["val_tokens_by_source"].values()) == n
    total = sum(ev["val_loss_by_source"][s][L] * ev["val_tokens_by_source"][s][L]
                for s in names for L in ev["val_tokens_by_source"][s])  # fmt: skip
    assert total == pytest.approx(
        sum(ev["val_loss"][L] * n for L, n in ev["val_tokens"].items()), rel=1e-6
    )
    rows = source_rows([load_run(tmp_path / "full"), load_run(tmp_path / "part")])
    assert rows is not None
    assert [r["source"] for r in rows] == names * 2
    assert sum(r["share"] for r in rows[:3]) == pytest.approx(1.0)
    assert all(r["train_loss"] > 0 and r["val_loss"] > 0 for r in rows)
    png = tmp_path / "sources.png"
    argv = ["compare", str(tmp_path / "full"), str(tmp_path / "part"), "--plot-sources", str(png)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "per source:" in out
    assert "| full | s1 |" in out
    assert png.stat().st_size > 10_000


def test_the_logged_per_source_loss_equals_a_recomputation_from_the_batch(
    three: tuple[str, ...],
) -> None:
    blend = Blend([(three[0], 1.0), (three[1], 1.0), (three[2], 1.0)], seed=0)
    loader = VSLLoader(blend, tokens_per_step=TPS, seed=0)
    torch.manual_seed(0)
    model = GPT(model_config("tiny", blend.vocab_size))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    names = source_names(blend)
    assert names is not None
    metrics = SourceMetrics(names, torch.device("cpu"))
    checked = 0
    batches = list(loader)[:4]
    for batch in batches:
        x, y = batch["input_ids"].contiguous(), batch["labels"].contiguous()
        with torch.no_grad():  # the same weights train_step's forward uses
            tok = torch.nn.functional.cross_entropy(
                model(x, None, None).flatten(0, 1).float(), y.flatten(),
                ignore_index=IGNORE_INDEX, reduction="none",
            ).view(y.shape).double()  # fmt: skip
        src = batch["source"].numpy()
        want = {}
        for s, name in enumerate(names):
            sel = torch.from_numpy(src == s)
            n = int((y[sel] != IGNORE_INDEX).sum())
            want[name] = (float(tok[sel].sum()) / n if n else None, n)
        row_loss = metrics.row_buffer(x.shape[0])
        h = max(1, x.shape[0] // 2)
        micro = [(x[:h], y[:h], None, None), (x[h:], y[h:], None, None)]  # two micro-batches
        targets = torch.tensor(float((y != IGNORE_INDEX).sum()), dtype=torch.float64)
        train_step(model, model.parameters(), opt, None, micro, targets, 1, 1.0, row_loss=row_loss)
        got = metrics.record(batch, row_loss, World())
        for name in names:
            loss, n = want[name]
            assert got["source_targets"][name] == n
            if n:
                assert got["source_loss"][name] == pytest.approx(loss, rel=1e-5)
                checked += 1
    assert checked >= 4
    assert np.unique(np.concatenate([b["source"].numpy() for b in batches])).size > 1


def test_row_losses_skip_ignored_targets_and_logging_leaves_the_step_unchanged() -> None:
    """Per-row losses equal cross entropy per row with ignored targets adding 0, and a step with
    the row-loss buffer trains exactly (bitwise) as one without: logging only reads."""
    from ddecomp.training.step import row_losses

    torch.manual_seed(0)
    logits = torch.randn(3 * 8, 50)
    y = torch.randint(0, 50, (3, 8))
    y[0, :3] = IGNORE_INDEX
    y[2] = IGNORE_INDEX  # a row with no target at all
    want = torch.nn.functional.cross_entropy(
        logits, y.flatten(), ignore_index=IGNORE_INDEX, reduction="none"
    ).view(3, 8).sum(dim=1)  # fmt: skip
    got = row_losses(torch.log_softmax(logits, dim=-1), y)
    assert torch.allclose(got, want, rtol=1e-6)
    assert got[2] == 0
    assert got[0] > 0

    results = []
    for with_rows in (False, True):
        torch.manual_seed(1)
        model = GPT(model_config("tiny", 64))
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        x = torch.randint(0, 64, (2, 16))
        t = torch.randint(0, 64, (2, 16))
        t[1, 5:] = IGNORE_INDEX
        n = torch.tensor(float((t != IGNORE_INDEX).sum()), dtype=torch.float64)
        buf = torch.zeros(2) if with_rows else None
        loss, norm = train_step(
            model, model.parameters(), opt, None, (x, t, None, None), n, 1, 1.0, row_loss=buf
        )
        results.append((loss, norm, [q.detach().clone() for q in model.parameters()]))
        if buf is not None:
            assert float(buf.sum()) == pytest.approx(float(loss), rel=1e-6)
    (l0, n0, p0), (l1, n1, p1) = results
    assert torch.equal(l0, l1)
    assert torch.equal(n0, n1)
    assert all(torch.equal(a, b) for a, b in zip(p0, p1, strict=True))
