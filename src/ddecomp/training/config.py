"""Validated configuration of the reference model and of a training run (no torch import).

Kept apart from :mod:`ddecomp.training.model` and :mod:`ddecomp.training.loop` so that the CLI can
build its parser and validate arguments without importing torch (~0.7 s), and so the sizes are
readable on their own. Paper shapes (OpenLM): 160m = 768 x 12 layers, 410m = 1024 x 24,
1b = 2048 x 24. Nothing here reads or knows the data layer: a run's data (one dataset or a blend,
and the blend's weights) is checked where it is opened, :func:`ddecomp.data.blend.open_sources`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from ddecomp.decompose import is_power_of_two
from ddecomp.errors import UserError

Norm = Literal["rmsnorm", "layernorm"]
Mlp = Literal["swiglu", "gelu"]


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the GPT. ``vocab_size`` comes from the dataset's tokenizer."""

    vocab_size: int
    d_model: int
    n_layer: int
    n_head: int
    d_ff: int
    norm: Norm = "rmsnorm"
    mlp: Mlp = "swiglu"
    rope_base: float = 100_000.0
    tie_embeddings: bool = False
    init_std: float = 0.02
    qk_norm: bool = False  # normalise q and k (``norm``, over d_model) before RoPE; release: on

    def __post_init__(self) -> None:
        for name in ("vocab_size", "d_model", "n_layer", "n_head", "d_ff"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise UserError(f"model {name}={v!r} must be a positive integer")
        if self.d_model % self.n_head or (self.d_model // self.n_head) % 2:
            raise UserError(
                f"model d_model={self.d_model} must split into n_head={self.n_head} heads of an "
                "even width (RoPE rotates pairs); pick d_model divisible by 2 * n_head"
            )
        if self.norm not in ("rmsnorm", "layernorm"):
            raise UserError(f"model norm={self.norm!r}: use 'rmsnorm' or 'layernorm'")
        if self.mlp not in ("swiglu", "gelu"):
            raise UserError(f"model mlp={self.mlp!r}: use 'swiglu' or 'gelu'")
        if not self.rope_base > 1:
            raise UserError(f"model rope_base={self.rope_base} must be > 1 (paper: 100000)")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head


# name -> (d_model, n_layer, n_head, d_ff, tie_embeddings)
SIZES: dict[str, tuple[int, int, int, int, bool]] = {
    "tiny": (64, 2, 4, 192, True),
    "small": (256, 4, 4, 704, False),
    "160m": (768, 12, 12, 2048, False),
    "410m": (1024, 24, 16, 2816, False),
    "1b": (2048, 24, 16, 5632, False),
}


def model_config(size: str, vocab_size: int, **overrides: object) -> ModelConfig:
    """The :class:`ModelConfig` of a named size; ``overrides`` replace single fields."""
    if size not in SIZES:
        raise UserError(f"unknown model size {size!r}; use one of {', '.join(SIZES)}")
    d, n_layer, n_head, d_ff, tie = SIZES[size]
    cfg = ModelConfig(vocab_size, d, n_layer, n_head, d_ff, tie_embeddings=tie)
    return replace(cfg, **overrides) if overrides else cfg  # type: ignore[arg-type]


METHODS = ("dd", "concat", "concat-dm", "pack")
WARMUP_FRACTION = 0.1  # of the run's steps, when --warmup is not given
WARMUP_CAP = 50  # steps: long runs need no longer warmup than this at these model sizes


def default_warmup(steps: int) -> int:
    """Warmup steps for a run of ``steps`` steps: 10% of them, at most 50 (6 for a 64-step run).

    Always in ``[0, steps)``, so the default never refuses a short run (a fixed 50 refused every
    run of 50 steps or fewer); runs under 10 steps get no warmup.
    """
    return min(WARMUP_CAP, int(steps * WARMUP_FRACTION))


MAX_STEPS = 1 << 28  # a plan holds a few int64 per step: 2 GiB each at this many steps
MAX_SEED = (1 << 63) - 1  # numpy takes any seed >= 0, torch.manual_seed a 64-bit integer


def check_plannable(tokens: int | None, tokens_per_step: int, seed: int, epoch: int = 0) -> None:
    """Refuse a seed or epoch outside ``[0, 2**63)`` and a run of more than :data:`MAX_STEPS`
    steps (its plan would not fit in memory) with one line, before any plan is built."""
    for flag, v in (("--seed", seed), ("--epoch", epoch)):
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_SEED:
            raise UserError(f"{flag} {v!r} must be an integer in [0, 2**63)")
    if tokens is not None and tokens_per_step >= 1 and tokens // tokens_per_step > MAX_STEPS:
        raise UserError(
            f"--tokens {tokens:,} is {tokens // tokens_per_step:,} steps of {tokens_per_step:,} "
            f"tokens, more than the {MAX_STEPS:,} a plan can hold in memory; raise "
            "--tokens-per-step or lower --tokens"
        )


# Fields that must not change when a run is resumed (the rest, e.g. device, may).
RESUME_FIXED = (
    "method",
    "size",
    "tokens",
    "tokens_per_step",
    "max_len",
    "curriculum",
    "cycles",
    "mode",
    "lr",
    "min_lr_ratio",
    "warmup",
    "weight_decay",
    "grad_clip",
    "seed",
    "model_overrides",
    "qk_norm",
    "z_loss",
)
# What a checkpoint written before a RESUME_FIXED field existed had (the field's old behaviour).
RESUME_ABSENT = {"qk_norm": False, "z_loss": 0.0}


@dataclass(frozen=True)
class TrainConfig:
    """One training run. Token counts are global (all ranks together); steps are optimizer steps.

    data: prepared dataset directory, or several (a tuple) trained as their
    :class:`~ddecomp.data.blend.Blend` with ``factors`` or ``shares`` (one per directory; neither:
    all factors 1; checked when the run opens its data); out: run directory (created).
    method: dd | concat | concat-dm | pack. size: tiny | small | 160m | 410m | 1b.
    tokens: training tokens in total; tokens_per_step: tokens per optimizer step.
    max_len: longest sequence in tokens (None: the dataset's); the baselines' chunk/bin length.
    curriculum, cycles: DD's curriculum (see ddecomp.loading.curriculum) and its number of cycles,
    spread over the whole run; mode: how the plan realises the odds (ddecomp.loading.plan.MODES).
    qk_norm, z_loss: the release's model recipe (QK-norm; z-loss coefficient), off by default;
    recipe: the name of the recipe that set the defaults (recorded only).
    lr: peak learning rate; min_lr_ratio: final LR as a fraction of it; warmup: steps (None:
    :func:`default_warmup` of the run's steps, resolved here, so ``cfg.warmup`` is always an int
    after construction and ``config.json`` records the number used).
    eval_every / checkpoint_every: steps between evaluations / checkpoints (0: only at the end).
    checkpoints: False writes none, not even at the end (no resume; for benchmarks, where a 410m
    checkpoint would write 6.6 GB per run).
    eval_tokens: held-out tokens per context length per evaluation.
    micro_batch_tokens: at most this many tokens per forward/backward (None: a rank's whole share
    of the step); the step's gradient is the same (:mod:`ddecomp.training.microbatch`); at least
    ``max_len``, since rows are never cut. May change on resume.
    layout: ``rows`` (default: ``[T / L, L]`` per step, one compiled graph per length) or
    ``flat`` (``[1, T]`` streams attended block-diagonally through ``cu_seqlens``, one graph for
    the run; :mod:`ddecomp.loading.flat`). The same tokens and gradients; may change on resume.
    progress: a progress bar when stderr is a terminal (else, and when False, plain lines).
    stop_after: stop (with a checkpoint) after this many steps, as a preemption would; the
    schedule still spans the whole run. resume: continue RUN from its latest checkpoint.
    """

    data: str | tuple[str, ...]
    out: str
    method: str = "dd"
    size: str = "tiny"
    tokens: int = 1 << 22
    tokens_per_step: int = 1 << 14
    max_len: int | None = None
    curriculum: str = "grow-p2"
    cycles: int = 8
    mode: str = "release"
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup: int | None = None
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    seed: int = 0
    device: str = "auto"
    compile: bool = False
    deterministic: bool = False
    eval_every: int = 0
    eval_tokens: int = 32768
    checkpoint_every: int = 0
    keep_checkpoints: int = 2
    checkpoints: bool = True
    stop_after: int | None = None
    resume: bool = False
    num_workers: int = 0
    micro_batch_tokens: int | None = None
    progress: bool = True
    peak_flops: float | None = None
    model_overrides: dict[str, Any] = field(default_factory=dict)
    qk_norm: bool = False  # QK-norm in the reference GPT (release recipe: on)
    z_loss: float = 0.0  # coef x mean(logsumexp(logits)^2) added to the loss (release: 1e-4)
    recipe: str | None = None  # the recipe the CLI applied (ddecomp.training.recipe), recorded
    factors: tuple[float, ...] | None = None
    shares: tuple[float, ...] | None = None
    layout: str = "rows"

    def __post_init__(self) -> None:
        if self.layout not in ("rows", "flat"):
            raise UserError(f"--layout {self.layout!r}: use rows or flat")
        if self.method not in METHODS:
            raise UserError(f"--method {self.method!r}: use one of {', '.join(METHODS)}")
        if self.size not in SIZES:
            raise UserError(f"--size {self.size!r}: use one of {', '.join(SIZES)}")
        if self.tokens_per_step < 1 or self.tokens < self.tokens_per_step:
            raise UserError(
                f"--tokens {self.tokens} must be at least --tokens-per-step "
                f"{self.tokens_per_step} (>= 1): the run would have no step"
            )
        check_plannable(self.tokens, self.tokens_per_step, self.seed)
        for name in ("lr", "min_lr_ratio", "weight_decay", "grad_clip"):
            if not math.isfinite(getattr(self, name)):  # inf/NaN: a NaN loss steps later
                flag = "--" + name.replace("_", "-")
                raise UserError(f"{flag} {getattr(self, name)} must be a finite number")
        if self.warmup is None:
            # A default must fit every run length; an explicit value that does not is an error.
            object.__setattr__(self, "warmup", default_warmup(self.steps))
        elif self.warmup < 0 or self.warmup >= self.steps:
            raise UserError(
                f"--warmup {self.warmup} steps must be in [0, {self.steps}) for a run of "
                f"{self.steps} steps (--tokens {self.tokens} // --tokens-per-step "
                f"{self.tokens_per_step}); omit --warmup for the default "
                f"({default_warmup(self.steps)} here)"
            )
        if not (self.lr > 0 and 0 <= self.min_lr_ratio <= 1):
            raise UserError(
                f"--lr {self.lr} must be > 0 and min_lr_ratio {self.min_lr_ratio} in [0, 1]"
            )
        if self.grad_clip <= 0 or self.weight_decay < 0:
            raise UserError(
                f"grad_clip {self.grad_clip} must be > 0, weight_decay {self.weight_decay} >= 0"
            )
        for name in ("eval_every", "checkpoint_every", "cycles", "keep_checkpoints", "eval_tokens"):
            v = getattr(self, name)
            low = 0 if name.endswith("every") else 1
            if v < low:
                raise UserError(f"--{name.replace('_', '-')} {v} must be >= {low}")
        if not self.checkpoints and (self.stop_after is not None or self.resume):
            raise UserError(
                "--no-checkpoints cannot be combined with --stop-after or --resume: both need a "
                "checkpoint; drop --no-checkpoints"
            )
        if self.stop_after is not None and not 1 <= self.stop_after <= self.steps:
            raise UserError(f"stop_after {self.stop_after} must be in [1, {self.steps}]")
        if self.micro_batch_tokens is not None and not (
            isinstance(self.micro_batch_tokens, int) and self.micro_batch_tokens >= 1
        ):
            raise UserError(f"--micro-batch-tokens {self.micro_batch_tokens} must be >= 1")
        if not (self.z_loss >= 0 and self.z_loss < float("inf")):
            raise UserError(f"--z-loss {self.z_loss} must be a finite coefficient >= 0")
        if self.max_len is not None and not is_power_of_two(self.max_len):
            raise UserError(f"--max-len {self.max_len} must be a power of two")

    def model_kwargs(self) -> dict[str, Any]:
        """Fields of :class:`ModelConfig` this run sets: ``qk_norm``, then ``model_overrides``."""
        return {"qk_norm": self.qk_norm, **self.model_overrides}

    @property
    def data_dirs(self) -> tuple[str, ...]:
        return (self.data,) if isinstance(self.data, str) else tuple(self.data)

    @property
    def warmup_steps(self) -> int:
        """The warmup in steps (``warmup`` once resolved; typed ``int`` for callers)."""
        assert self.warmup is not None  # resolved in __post_init__
        return self.warmup

    @property
    def steps(self) -> int:
        return self.tokens // self.tokens_per_step

    @property
    def doc_masked(self) -> bool:
        return self.method in ("concat-dm", "pack")
