"""The release's model recipe: QK-norm, z-loss, and ``--recipe release`` under explicit flags."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from ddecomp.cli.train import config_from_args, register
from ddecomp.errors import UserError
from ddecomp.loading.protocols import IGNORE_INDEX
from ddecomp.training.attention import attend
from ddecomp.training.model import GPT, Attention, apply_rope, model_config, rope_angles, z_loss_sum
from ddecomp.training.recipe import apply_recipe
from ddecomp.training.step import train_step


def _parse(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    register(p.add_subparsers())
    return p.parse_args(["train", "DATA", "--out", "RUN", *argv])


@pytest.mark.parametrize("norm", ["rmsnorm", "layernorm"])
def test_qk_norm_normalises_q_and_k_over_d_model_before_rope(norm: str) -> None:
    torch.manual_seed(0)
    m = GPT(model_config("tiny", 97, qk_norm=True, norm=norm)).eval()
    attn = m.blocks[0].attn
    assert isinstance(attn, Attention)
    assert attn.q_norm is not None
    assert attn.k_norm is not None
    gq, gk = attn.q_norm.weight, attn.k_norm.weight
    assert isinstance(gq, torch.Tensor)
    assert isinstance(gk, torch.Tensor)
    with torch.no_grad():  # gains away from 1, so a skipped or misplaced norm shows
        gq.uniform_(0.5, 1.5)
        gk.uniform_(0.5, 1.5)
    x = torch.randn(2, 9, 64)
    cos, sin = rope_angles(torch.arange(9).expand(2, 9), 16, 100_000.0)
    q, k, v = attn.qkv(x).chunk(3, dim=-1)
    if norm == "rmsnorm":
        q = F.rms_norm(q, (64,), gq, eps=1e-6)
        k = F.rms_norm(k, (64,), gk, eps=1e-6)
    else:
        q = F.layer_norm(q, (64,), gq)
        k = F.layer_norm(k, (64,), gk)
    heads = [t.view(2, 9, 4, 16).transpose(1, 2) for t in (q, k, v)]
    y = attend(apply_rope(heads[0], cos, sin), apply_rope(heads[1], cos, sin), heads[2], None)
    want = attn.out(y.transpose(1, 2).reshape(2, 9, 64))
    with torch.no_grad():
        got = attn(x, cos, sin, None)
        torch.testing.assert_close(got, want)
        plain = GPT(model_config("tiny", 97, norm=norm)).blocks[0].attn
        assert isinstance(plain, Attention)
        plain.load_state_dict({k_: v_ for k_, v_ in attn.state_dict().items() if "norm" not in k_})
        assert not torch.allclose(plain(x, cos, sin, None), got)  # the norm did change it


def test_z_loss_adds_coef_times_mean_squared_logsumexp() -> None:
    torch.manual_seed(1)
    m = GPT(model_config("tiny", 97))
    x = torch.randint(0, 97, (3, 12))
    y = torch.randint(0, 97, (3, 12))
    y[0, :5] = IGNORE_INDEX  # masked targets take no part in the mean
    n = int((y != IGNORE_INDEX).sum())
    coef = 0.3  # large, so the term is far above rounding

    # the direct computation: ce mean + coef * mean over targets of logsumexp(logits)^2
    ref = GPT(model_config("tiny", 97))
    ref.load_state_dict(m.state_dict())
    logits = ref(x)
    keep = y != IGNORE_INDEX
    lse = torch.logsumexp(logits.float(), dim=-1)[keep]
    ce = F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=IGNORE_INDEX)
    (ce + coef * (lse**2).mean()).backward()
    want = [p.grad.clone() for p in ref.parameters() if p.grad is not None]
    torch.testing.assert_close(z_loss_sum(logits, y), (lse**2).sum())
    # train_step zeroes the gradients after its step: recompute them as it does, unzeroed
    mm = GPT(model_config("tiny", 97))
    mm.load_state_dict(m.state_dict())
    out = mm(x)
    total = F.cross_entropy(
        out.flatten(0, 1), y.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
    ) + coef * z_loss_sum(out, y)
    (total / n).backward()
    got = [p.grad for p in mm.parameters() if p.grad is not None]
    assert len(got) == len(want) > 0
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)
    # and train_step really uses it: the same step moves the weights differently with z-loss
    moved = []
    for z in (0.0, coef):
        mm = GPT(model_config("tiny", 97))
        mm.load_state_dict(m.state_dict())
        opt = torch.optim.SGD(mm.parameters(), lr=0.1)
        loss, _ = train_step(
            mm, mm.parameters(), opt, None, (x, y, None, None), torch.tensor(float(n)), 1, 1e9, z
        )
        torch.testing.assert_close(loss / n, ce.detach())  # the reported loss is the CE alone
        moved.append(mm.head.weight.detach().clone())
    assert not torch.allclose(moved[0], moved[1])


def test_the_release_recipe_sets_its_values_and_explicit_flags_win() -> None:
    cfg = config_from_args(_parse("--recipe", "release", "--tokens", "1100800"))
    assert cfg.recipe == "release"
    assert (cfg.qk_norm, cfg.z_loss, cfg.min_lr_ratio, cfg.lr) == (True, 1e-4, 0.01, 3e-3)
    assert cfg.weight_decay == 0.033
    assert cfg.model_overrides["rope_base"] == 100_000.0
    assert cfg.model_overrides["norm"] == "layernorm"
    assert cfg.model_kwargs()["qk_norm"] is True
    assert cfg.warmup == round(cfg.steps * 5000 / 55040) == 6  # 67 steps: the release's fraction
    over = config_from_args(
        _parse(
            "--recipe", "release", "--no-qk-norm", "--z-loss", "0", "--lr", "1e-3", "--warmup", "2"
        )
    )
    assert (over.qk_norm, over.z_loss, over.lr, over.warmup) == (False, 0.0, 1e-3, 2)
    assert over.min_lr_ratio == 0.01  # what was not given still comes from the recipe
    plain = config_from_args(_parse())
    assert (plain.qk_norm, plain.z_loss, plain.recipe, plain.min_lr_ratio) == (
        False,
        0.0,
        None,
        0.1,
    )
    one = config_from_args(_parse("--qk-norm", "--z-loss", "1e-4"))
    assert (one.qk_norm, one.z_loss, one.recipe) == (True, 1e-4, None)
    with pytest.raises(UserError, match="recipe"):
        apply_recipe("openlm", {})
    with pytest.raises(UserError, match="z-loss"):
        config_from_args(_parse("--z-loss", "-1"))


def test_a_recipe_run_trains_and_records_what_it_used(tmp_path: Path) -> None:
    import json

    from ddecomp.training.loop import train
    from tests.training._corpus import cfg_for, make_dataset

    data = make_dataset(tmp_path / "ds", n_tokens=20_000)
    kw = apply_recipe("release", {"tokens": 4 * 1024, "tokens_per_step": 1024})
    s = train(cfg_for(data, tmp_path / "run", **kw))
    assert s["finished"]
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["train"]["recipe"] == "release"
    assert (config["train"]["qk_norm"], config["train"]["z_loss"]) == (True, 1e-4)
    assert (config["model"]["qk_norm"], config["model"]["norm"]) == (True, "layernorm")
    assert config["train"]["min_lr_ratio"] == 0.01
