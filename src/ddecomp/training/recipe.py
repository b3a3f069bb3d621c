"""Named training recipes: the settings a published run used, applied under explicit flags.

``release`` is the paper's reference release (``apple/ml-dataset-decomposition``,
``scripts/train_dd.sh`` on OpenLM; docs/method.md section 3.6 and peers.md): AdamW with betas
0.9 / 0.95 (ddecomp's only betas), peak learning rate 3e-3 decaying by one cosine to 3e-5 (1% of
the peak), warmup 5,000 of its 55,040 steps (the same fraction of this run's steps), weight decay
0.033, gradient clip 1, QK-norm, z-loss 1e-4, RoPE base 100,000, gain-only (bias-free) LayerNorm,
SwiGLU. :func:`apply_recipe` fills in what the user did not give; every explicit flag wins.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ddecomp.errors import UserError
from ddecomp.training.config import TrainConfig

RELEASE_WARMUP = (5000, 55040)  # train_dd.sh: warmup steps of the run's steps
RECIPES: dict[str, dict[str, Any]] = {
    "release": {
        "lr": 3e-3,
        "min_lr_ratio": 0.01,
        "weight_decay": 0.033,
        "grad_clip": 1.0,
        "qk_norm": True,
        "z_loss": 1e-4,
        "model_overrides": {"norm": "layernorm", "mlp": "swiglu", "rope_base": 100_000.0},
    }
}


def apply_recipe(name: str | None, given: Mapping[str, Any]) -> dict[str, Any]:
    """:class:`TrainConfig` keyword arguments: ``given`` (the explicit ones) over recipe ``name``'s
    values (None: no recipe). The release's warmup is its fraction of this run's steps, unless
    ``warmup`` is given; ``model_overrides`` merge key by key, the given ones winning."""
    out = dict(given)
    if name is None:
        return out
    if name not in RECIPES:
        raise UserError(f"--recipe {name!r} is not one of {', '.join(RECIPES)}")
    for k, v in RECIPES[name].items():
        if k == "model_overrides":
            out[k] = {**v, **dict(given.get(k) or {})}
        else:
            out.setdefault(k, v)
    if "warmup" not in given or given["warmup"] is None:
        d = TrainConfig(data="", out="")
        steps = int(out.get("tokens", d.tokens)) // int(
            out.get("tokens_per_step", d.tokens_per_step)
        )
        w, of = RELEASE_WARMUP
        out["warmup"] = max(0, min(steps - 1, round(steps * w / of)))
    out["recipe"] = name
    return out
