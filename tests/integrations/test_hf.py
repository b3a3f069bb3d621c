"""DDTrainer with the real transformers Trainer on CPU: the plan trained exactly, exact loss
under gradient accumulation, every target once, resume through the Trainer's checkpoints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("transformers")
import itertools

from transformers import TrainerCallback

import ddecomp
from ddecomp.integrations.hf_batches import micro_batches
from ddecomp.preparing.pipeline import TokensConfig, prepare_tokens
from ddecomp.training.model import GPT, model_config
from tests._fixtures import run_torchrun
from tests.integrations._hf import TPS, Recording, hf_args, make_data, tiny_llama


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_data(tmp_path_factory.mktemp("hfdata"))


def loader_for(root: Path, steps: int, split: str = "train") -> ddecomp.VSLLoader:
    return ddecomp.VSLLoader(ddecomp.open_dataset(root, split=split), tokens_per_step=TPS,
                             total_tokens=steps * TPS)  # fmt: skip


class Lengths(TrainerCallback):
    def __init__(self) -> None:
        self.trainer: Recording | None = None
        self.lengths: list[int] = []

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        assert self.trainer is not None
        self.lengths.append(self.trainer.last_step["seq_len"])


@pytest.mark.slow
def test_trains_the_plan_once_and_learns(data: Path, tmp_path: Path) -> None:
    loader = loader_for(data, 24)
    cb = Lengths()
    tr = Recording(model=tiny_llama(), args=hf_args(tmp_path), train_loader=loader, callbacks=[cb])
    cb.trainer = tr
    out = tr.train()
    plan = loader.plan.step_length.tolist()
    assert len(plan) == 24
    assert len(set(plan)) >= 3
    assert out.global_step == 24
    assert tr.args.max_steps == 24
    assert cb.lengths == plan
    # the Trainer served exactly the loader's batches, in order, each once
    ref = loader_for(data, 24)
    rows = []
    for (_, s, _, x, y, _), want in zip(tr.seen, ref, strict=True):
        assert s == want["step"]
        assert torch.equal(x, want["input_ids"])
        assert torch.equal(y, want["labels"])
        rows += [tuple(r) for r in torch.cat([x, y[:, -1:]], 1).tolist()]
    assert len(rows) == sum(TPS // L for L in plan)
    assert len(set(rows)) == len(rows)
    losses = list(tr.step_losses().values())
    assert np.mean(losses[-4:]) < np.mean(losses[:4]) - 0.1


@pytest.mark.parametrize("kind", ["llama", "gpt"])
def test_loss_trains_every_target_once(data: Path, tmp_path: Path, kind: str) -> None:
    """Our loss is the plain mean CE of logits[i] vs labels[i] (ddecomp labels are next tokens);
    HF's own labels= loss shifts again and differs (the control)."""
    torch.manual_seed(0)
    model = tiny_llama() if kind == "llama" else GPT(model_config("tiny", 64))
    loader = loader_for(data, 8)
    tr = Recording(model=model, args=hf_args(tmp_path), train_loader=loader)
    batch = next(iter(loader_for(data, 8)))
    mbs, n = tr.get_batch_samples(iter(micro_batches(batch, 1)), 1, torch.device("cpu"))
    ours = tr.compute_loss(model, mbs[0], num_items_in_batch=n)
    x, y = batch["input_ids"], batch["labels"]
    logits = model(x) if kind == "gpt" else model(input_ids=x).logits
    direct = F.cross_entropy(logits.flatten(0, 1), y.flatten())
    assert isinstance(n, torch.Tensor)
    assert int(n) == y.numel() == TPS
    torch.testing.assert_close(ours, direct, rtol=1e-6, atol=1e-6)
    if kind == "llama":  # HF's internal shift: a target lost per row, the rest misaligned
        hf = model(input_ids=x, labels=y).loss
        assert abs(float(hf.detach()) - float(direct.detach())) > 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["llama", "gpt"])
def test_resume_through_trainer_checkpoint_equals_the_uninterrupted_run(
    data: Path, tmp_path: Path, kind: str
) -> None:
    def model() -> torch.nn.Module:
        torch.manual_seed(0)
        return tiny_llama() if kind == "llama" else GPT(model_config("tiny", 64))

    full = Recording(model=model(), args=hf_args(tmp_path / "a"), train_loader=loader_for(data, 8))
    full.train()

    class StopAt(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            control.should_training_stop = state.global_step == 3

    out = tmp_path / "b"
    part = Recording(model=model(), args=hf_args(out, save_strategy="steps", save_steps=3),
                     train_loader=loader_for(data, 8), callbacks=[StopAt()])  # fmt: skip
    part.train()
    assert (out / "checkpoint-3" / "ddecomp_loader_state.json").is_file()
    torch.manual_seed(123)  # a fresh process would not share the first run's RNG
    rest = Recording(model=model(), args=hf_args(out, save_strategy="steps", save_steps=3),
                     train_loader=loader_for(data, 8))  # fmt: skip
    rest.train(resume_from_checkpoint=True)
    assert rest.state.epoch == pytest.approx(1.0)  # counted from the loader, not from HF's batches
    got = [(s, x, y) for _, s, _, x, y, _ in rest.seen]
    want = [(s, x, y) for _, s, _, x, y, _ in full.seen if s >= 3]
    assert [s for s, _, _ in got] == list(range(3, 8))
    for (s, x, y), (_, wx, wy) in zip(got, want, strict=True):
        assert torch.equal(x, wx), f"step {s} differs"
        assert torch.equal(y, wy), f"step {s} differs"
    a, b = full.step_losses(), rest.step_losses()
    np.testing.assert_allclose([b[s] for s in range(3, 8)], [a[s] for s in range(3, 8)], rtol=1e-6)


def _unequal_targets_data(root: Path) -> Path:
    """Documents of 16k + 10 tokens: every tail is 9 targets, packed one per 16-target tail row
    (7 padding labels), so a 16-step mixes full rows and padded ones: its micro-batches hold
    different numbers of targets."""
    rng = np.random.default_rng(3)
    docs = []
    for _ in range(700):
        n = 16 * int(rng.integers(1, 6)) + 10
        d = (int(rng.integers(0, 60)) + int(rng.integers(1, 7)) * np.arange(n - 1)) % 60
        docs.append(np.append(d, 63).astype(np.uint16))
    prepare_tokens(TokensConfig(np.concatenate(docs), root, eos_id=63, min_len=16, max_len=128,
                                vocab_size=64, tails="pack", tail_len=16))  # fmt: skip
    return root


def test_gradient_accumulation_equals_the_unsplit_step(tmp_path: Path) -> None:
    root = _unequal_targets_data(tmp_path / "d")
    mk = lambda: ddecomp.VSLLoader(ddecomp.open_dataset(root), tokens_per_step=TPS,  # noqa: E731
                                   total_tokens=12 * TPS)  # fmt: skip
    probe = mk()
    uneven = []  # steps whose 4 micro-batches hold different target counts
    for s in range(len(probe)):
        b = probe.make_step(0, s)
        counts = {int((m["labels"] != -100).sum()) for m in micro_batches(b, 4)}
        if len(counts) > 1:
            uneven.append(s)
    assert uneven, "no step with uneven micro-batches: the test would be vacuous"
    last = uneven[0]

    class Grads(TrainerCallback):
        def __init__(self) -> None:
            self.grads: list[torch.Tensor] = []

        def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            ps = kw["model"].parameters()
            self.grads.append(torch.cat([p.grad.flatten() for p in ps]).clone())

    runs = []
    for k in (1, 4):
        g = Grads()
        args = hf_args(tmp_path / f"k{k}", max_steps=last + 1, gradient_accumulation_steps=k,
                       max_grad_norm=0.0)  # fmt: skip
        tr = Recording(model=tiny_llama(), args=args, train_loader=mk(), callbacks=[g])
        tr.train()
        runs.append((tr, g))
    (one, g1), (four, g4) = runs
    assert len(g1.grads) == len(g4.grads) == last + 1
    for s, (a, b) in enumerate(zip(g1.grads, g4.grads, strict=True)):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-7, msg=f"step {s} gradients")
    l1, l4 = one.step_losses(), four.step_losses()
    np.testing.assert_allclose([l4[s] for s in l1], list(l1.values()), rtol=1e-5)
    # the control: a mean per micro-batch, averaged over the 4, is not the step's loss
    parts = [(loss, int((y != -100).sum())) for _, s, _, _, y, loss in four.seen if s == last]
    n = sum(c for _, c in parts)
    naive = np.mean([loss * n / c for loss, c in parts])
    assert abs(naive - l1[last]) > 1e-4 * l1[last]


def test_evaluate_is_the_token_weighted_mean(data: Path, tmp_path: Path) -> None:
    val = ddecomp.VSLLoader(ddecomp.open_dataset(data, split="val"), tokens_per_step=TPS)
    model = tiny_llama()
    tr = Recording(model=model, args=hf_args(tmp_path), train_loader=loader_for(data, 8),
                   eval_loader=val)  # fmt: skip
    m = tr.evaluate()
    total, n = 0.0, 0
    with torch.no_grad():
        for s in range(val.steps_in_epoch(0)):
            b = val.make_step(0, s)
            logits = model(input_ids=b["input_ids"]).logits
            total += float(
                F.cross_entropy(logits.flatten(0, 1), b["labels"].flatten(), reduction="sum")
            )
            n += b["labels"].numel()
    assert n > 0
    assert m["eval_tokens"] == n
    assert m["eval_loss"] == pytest.approx(total / n, rel=1e-6)
    assert val.step == 0  # evaluation does not move the eval loader


def test_packed_tail_rows_are_masked_per_piece(tmp_path: Path) -> None:
    """With tail rows the Llama is checked at init and trained with per-piece position_ids:
    the loss of a packed step equals the sum over its pieces run one by one."""
    root = make_data(tmp_path / "t", tails=True)
    loader = ddecomp.VSLLoader(ddecomp.open_dataset(root), tokens_per_step=TPS,
                               total_tokens=24 * TPS)  # fmt: skip
    assert loader.masked_lengths
    model = tiny_llama()
    tr = Recording(model=model, args=hf_args(tmp_path / "o"), train_loader=loader)
    step = next(s for s in range(len(loader)) if "position_ids" in loader.make_step(0, s))
    batch = loader.make_step(0, step)
    mbs, n = tr.get_batch_samples(iter(micro_batches(batch, 1)), 1, torch.device("cpu"))
    ours = float(tr.compute_loss(model, mbs[0], num_items_in_batch=n).detach())
    total, pieces = 0.0, 0
    with torch.no_grad():
        for r in range(batch["input_ids"].shape[0]):
            pos = batch["position_ids"][r]
            starts = [*torch.nonzero(pos == 0).flatten().tolist(), pos.numel()]
            for a, b in itertools.pairwise(starts):
                logits = model(input_ids=batch["input_ids"][r : r + 1, a:b]).logits[0]
                total += float(F.cross_entropy(logits, batch["labels"][r, a:b], ignore_index=-100,
                                               reduction="sum"))  # fmt: skip
                pieces += 1
    assert pieces > batch["input_ids"].shape[0]  # vacuity: some rows hold several pieces
    assert isinstance(n, torch.Tensor)
    assert ours == pytest.approx(total / int(n), rel=1e-5)
    assert tr.last_step["seq_len"] == batch["seq_len"]


@pytest.mark.slow
def test_two_process_ddp_equals_one_process_and_resumes_on_one(data: Path, tmp_path: Path) -> None:
    """gloo on 127.0.0.1: the ranks' rows are disjoint halves of the one-process step, every
    step has one length, the loss equals the one-process run's; the 2-process checkpoint then
    resumes in one process (elastic) with the one-process run's batches and losses."""
    one = Recording(model=tiny_llama(), args=hf_args(tmp_path / "one"),
                    train_loader=loader_for(data, 6))  # fmt: skip
    one.train()
    ref_rows = {s: x.tolist() for _, s, _, x, _, _ in one.seen}
    ref_loss = one.step_losses()
    script = Path(__file__).with_name("_hf_ddp.py")
    r = run_torchrun(str(script), str(data), str(tmp_path), "6")
    assert r.returncode == 0, r.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{k}.json").read_text()) for k in (0, 1)]
    assert [d["world_size"] for d in ranks] == [2, 2]
    for i in range(6):
        (s0, L0, rows0, loss0), (s1, L1, rows1, loss1) = ranks[0]["steps"][i], ranks[1]["steps"][i]
        assert s0 == s1 == i
        assert L0 == L1 == len(ref_rows[i][0])
        assert not {tuple(r) for r in rows0} & {tuple(r) for r in rows1}
        assert rows0 + rows1 == ref_rows[i]  # rank 0 the first half, rank 1 the second
        assert loss0 + loss1 == pytest.approx(ref_loss[i], rel=1e-4)
    # DDP averages gradients: each rank's loss carries world_size / global targets
    np.testing.assert_allclose(ranks[0]["grad_norms"], one.grad_norms, rtol=1e-4)
    assert len(one.grad_norms) == 6
    ck = tmp_path / "run" / "checkpoint-3"
    state = json.loads((ck / "ddecomp_loader_state.json").read_text())
    assert state["loader"]["world_size"] == 2
    rest = Recording(model=tiny_llama(seed=5), args=hf_args(tmp_path / "elastic"),
                     train_loader=loader_for(data, 6))  # fmt: skip
    rest.train(resume_from_checkpoint=str(ck))
    got = {s: x.tolist() for _, s, _, x, _, _ in rest.seen}
    assert sorted(got) == [3, 4, 5]
    for s in got:
        assert got[s] == ref_rows[s]
        assert rest.step_losses()[s] == pytest.approx(ref_loss[s], rel=1e-4)
