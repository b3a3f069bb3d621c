"""``ddecomp train DIR [DIR ...] --method dd|concat|concat-dm|pack --out RUN``: the trainer.

Several DIRs train on their :class:`~ddecomp.data.blend.Blend` (``--factors`` or ``--shares``).

Runs under ``torchrun`` as is: ``torchrun --nproc-per-node 8 -m ddecomp train DIR ...`` (DDP,
NCCL on GPUs, gloo on CPUs); every rank gets the same arguments.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any

from ddecomp.cli.blend_args import add_source_arguments
from ddecomp.loading.curriculum import CURRICULA
from ddecomp.loading.plan import LEGACY_MODES, MODES
from ddecomp.training.config import (
    METHODS,
    SIZES,
    WARMUP_CAP,
    WARMUP_FRACTION,
    TrainConfig,
    default_warmup,
)
from ddecomp.training.recipe import RECIPES, apply_recipe


def register(sub: Any) -> None:
    p = sub.add_parser(
        "train",
        allow_abbrev=False,
        help="train the reference GPT with DD or a baseline loader",
        description="Train the reference GPT on a prepared dataset. Token counts are global "
        "(all ranks); tokens per step are the same for every method, so runs of equal --tokens "
        "have equal steps and the same learning-rate schedule.",
    )
    d = TrainConfig(data="", out="")
    add_source_arguments(p)
    p.add_argument(
        "--method", choices=METHODS, default=d.method, help=f"data pipeline (default {d.method})"
    )
    p.add_argument("--out", required=True, metavar="RUN", help="run directory (created; required)")
    p.add_argument(
        "--size", choices=list(SIZES), default=d.size, help=f"model size (default {d.size})"
    )
    p.add_argument(
        "--tokens",
        type=int,
        default=d.tokens,
        help=f"training tokens (default {d.tokens:,}); DD plans its curriculum over them",
    )
    p.add_argument(
        "--tokens-per-step",
        type=int,
        default=d.tokens_per_step,
        help=f"tokens per optimizer step, all ranks (default {d.tokens_per_step:,})",
    )
    p.add_argument(
        "--max-len",
        type=int,
        default=None,
        help="longest sequence in targets (tokens per sequence; default: the dataset's "
        "--max-len); the baselines' chunk length",
    )
    p.add_argument(
        "--curriculum",
        default=d.curriculum,
        metavar="NAME|ODDS",
        help=f"DD's curriculum: {', '.join(CURRICULA)} or comma-separated odds, one per bucket, "
        f"shortest first (default {d.curriculum}; ignored by the baselines)",
    )
    p.add_argument(
        "--cycles",
        type=int,
        default=d.cycles,
        help=f"curriculum cycles per run, a count (default {d.cycles})",
    )
    opt = p.add_argument_group("optimizer (AdamW, linear warmup then one cosine decay)")
    opt.add_argument("--lr", type=float, default=None, help=f"peak learning rate (default {d.lr})")
    opt.add_argument(
        "--min-lr-ratio",
        type=float,
        default=None,  # None: the recipe's, else TrainConfig's
        help=f"final learning rate as a fraction of --lr (default {d.min_lr_ratio})",
    )
    opt.add_argument(
        "--warmup",
        type=int,
        default=None,
        help=f"warmup steps (default: {WARMUP_FRACTION * 100:.0f}%% of the run's steps, at most "
        f"{WARMUP_CAP}; e.g. {default_warmup(64)} for 64 steps)",
    )
    opt.add_argument(
        "--weight-decay",
        type=float,
        default=None,  # None: the recipe's, else TrainConfig's
        help=f"AdamW weight decay, a coefficient (default {d.weight_decay})",
    )
    opt.add_argument(
        "--grad-clip",
        type=float,
        default=None,  # None: the recipe's, else TrainConfig's
        help=f"gradient-norm clip, an L2 norm (default {d.grad_clip})",
    )
    rec = p.add_argument_group("model recipe (the release: QK-norm on, z-loss 1e-4)")
    rec.add_argument(
        "--qk-norm",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="normalise queries and keys before attention (default off; the release's recipe: on)",
    )
    rec.add_argument(
        "--z-loss",
        type=float,
        default=None,
        metavar="COEF",
        help="add COEF x mean(logsumexp(logits)^2) to the loss, a coefficient (default 0: off; "
        "the release's recipe: 1e-4)",
    )
    rec.add_argument(
        "--recipe",
        choices=list(RECIPES),
        default=None,
        help="set the paper's release settings: AdamW betas 0.9/0.95, lr 3e-3 cosine to 1%% of "
        "peak, warmup 5000/55040 of the steps, weight decay 0.033, QK-norm, z-loss 1e-4, RoPE "
        "base 100000, LayerNorm; explicit flags override it (default: none)",
    )
    p.add_argument(
        "--mode",
        choices=[*MODES, *LEGACY_MODES],
        default=d.mode,
        help="how DD's plan realises the odds: release (default; the reference release's "
        "weighting, odds x batches, so uniform is a plain random mix) | odds (odds alone; old "
        "name sample) | olmo-layout | symmetric-layout (old name layout); see ddecomp plan --help",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=d.seed,
        help=f"seed of the initial weights and the data order, an integer (default {d.seed})",
    )
    p.add_argument(
        "--device", default=d.device, help="auto (default: cuda when present), cpu, cuda, cuda:N"
    )
    p.add_argument(
        "--compile", action="store_true", help="torch.compile the model (warms each shape)"
    )
    p.add_argument(
        "--layout",
        choices=("rows", "flat"),
        default=d.layout,
        help=f"batch layout (default {d.layout}): rows = [tokens per rank / L, L] per step, a "
        "new shape per bucket length; flat = one [1, tokens per rank] stream every step, "
        "attention block-diagonal per sequence (cu_seqlens), so --compile builds one graph",
    )
    p.add_argument(
        "--eval-every",
        type=int,
        default=d.eval_every,
        help="steps between held-out evaluations (default 0: only at the end; compare's "
        "time to the baseline's loss needs evaluations during the run)",
    )
    p.add_argument(
        "--eval-tokens",
        type=int,
        default=d.eval_tokens,
        help=f"held-out tokens per context length (default {d.eval_tokens:,})",
    )
    p.add_argument(
        "--checkpoint-every",
        type=int,
        default=d.checkpoint_every,
        help="steps between checkpoints (default 0: only at the end)",
    )
    p.add_argument(
        "--keep-checkpoints",
        type=int,
        default=d.keep_checkpoints,
        help=f"checkpoints kept on disk, the latest (default {d.keep_checkpoints})",
    )
    p.add_argument(
        "--no-checkpoints",
        action="store_true",
        help="write no checkpoint, not even at the end (the run cannot be resumed)",
    )
    p.add_argument("--resume", action="store_true", help="continue RUN from its latest checkpoint")
    p.add_argument(
        "--stop-after",
        type=int,
        default=None,
        help="stop with a checkpoint after this many steps (default: run to the end; the "
        "schedule spans the full run)",
    )
    p.add_argument(
        "--deterministic", action="store_true", help="deterministic kernels (exact resume)"
    )
    p.add_argument(
        "--num-workers",
        type=int,
        default=d.num_workers,
        help=f"loader worker processes (default {d.num_workers}: load in the training process)",
    )
    p.add_argument(
        "--micro-batch-tokens",
        type=int,
        default=None,
        help="split each rank's step into forward/backward passes of at most this many tokens "
        "(at least --max-len; same gradients; default: no split)",
    )
    p.add_argument(
        "--no-progress",
        "--quiet",
        dest="no_progress",
        action="store_true",
        help="plain log lines instead of a progress bar (the default when stderr is not a "
        "terminal)",
    )
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The run's config. Flags are named after TrainConfig's fields (``--tokens-per-step`` ->
    ``tokens_per_step``); only the data and the two ``--no-*`` switches need translating."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)} - {"data"}
    given = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    return TrainConfig(
        data=args.data[0] if len(args.data) == 1 else tuple(args.data),  # one DIR stays a string
        checkpoints=not args.no_checkpoints,
        progress=not args.no_progress,
        **apply_recipe(getattr(args, "recipe", None), given),
    )


def run(args: argparse.Namespace) -> int:
    from ddecomp.training.loop import train

    summary = train(config_from_args(args))
    if summary:  # empty on ranks other than 0
        keys = ("method", "finished", "steps", "tokens", "elapsed_s", "tokens_per_s")
        print(json.dumps({k: summary.get(k) for k in keys}))
        fe = summary.get("final_eval")
        if fe:
            print(f"val loss (mean over lengths): {fe['val_loss_mean']:.4f}")
    return 0
