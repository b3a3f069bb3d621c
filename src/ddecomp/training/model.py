"""A compact GPT, written to be read: the reference model of ``ddecomp train``.

Pre-norm decoder blocks ``x + attn(norm(x))``, ``x + mlp(norm(x))``; RMSNorm (default) or
LayerNorm, both without bias; rotary position embeddings (RoPE) with base 100,000 by default, as
in the paper (a larger base helped its long-context evaluations); a SwiGLU (default) or GELU MLP;
no bias anywhere. Attention goes through :func:`ddecomp.training.attention.attend` (PyTorch SDPA,
or a document mask for ``concat-dm`` / ``pack``). With ``position_ids`` RoPE positions restart
at every document, so a masked document sees exactly the positions it would see alone (DD rows
are pieces of single documents and need no position ids).

Sizes (:data:`SIZES`; parameters counted with a 50,432-token vocabulary, untied embeddings):

====== ======= ======= ======= ====== ======================================================
name   d_model n_layer n_head  d_ff   parameters
====== ======= ======= ======= ====== ======================================================
tiny   64      2       4       192    ~0.1M + 64 x vocab (tied); CPU tests
small  256     4       4       704    ~3.2M + 2 x 256 x vocab; CPU demos
160m   768     12      12      2048   162M (OpenLM ``open_lm_160m``, paper's 160M)
410m   1024    24      16      2816   411M (OpenLM ``open_lm_411m``, paper's 410M)
1b     2048    24      16      5632   1.44B (OpenLM ``open_lm_1b``, paper's 1B)
====== ======= ======= ======= ====== ======================================================

``d_ff`` of the paper shapes is OpenLM's SwiGLU width ``256 * ceil(8 * d / 3 / 256)``.

FLOPs (:func:`train_flops`): a training step costs ``6 * N * T + 12 * n_layer * d * P`` where
``N`` is the number of matmul parameters (every weight except the embedding lookup; the LM head
counts), ``T`` the tokens of the step and ``P`` the attended (query, key) pairs
(:mod:`ddecomp.attention_cost`): ``L (L + 1) / 2`` per causal row of length ``L``,
``sum n (n + 1) / 2`` over the pieces of documents under a document mask. Per
token of a causal row that is ``6N + 6 * n_layer * d * (L + 1)``, the PaLM count with the causal
half of attention (``QK^T`` and ``AV``: ``2 * 2 * d`` forward FLOPs per pair and layer, times 3 for
forward + backward).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ddecomp.loading.protocols import IGNORE_INDEX
from ddecomp.training.attention import DocMask, attend
from ddecomp.training.config import SIZES as SIZES
from ddecomp.training.config import ModelConfig as ModelConfig
from ddecomp.training.config import Norm
from ddecomp.training.config import model_config as model_config


def _norm(kind: Norm, d: int) -> nn.Module:
    if kind == "rmsnorm":
        return nn.RMSNorm(d, eps=1e-6)
    return nn.LayerNorm(d, bias=False)


def rope_angles(positions: Tensor, head_dim: int, base: float) -> tuple[Tensor, Tensor]:
    """cos, sin of shape ``[B, 1, L, head_dim / 2]`` (float32) for integer ``positions [B, L]``."""
    inv = base ** (
        -torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim
    )
    ang = positions.to(torch.float32)[..., None] * inv
    return ang.cos()[:, None], ang.sin()[:, None]


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate pairs ``(x_i, x_{i + hd/2})`` of ``x [B, H, L, hd]`` by the position's angles.

    In float32 whatever ``x``'s dtype (then cast back): one rounding at the end. Autograd keeps
    only ``cos`` and ``sin`` for the products (they need no gradient), not float32 copies of q
    and k: measured under CPU bf16 autocast, rotating in bf16 instead saved no activation memory
    (550 vs 553 KiB per token for 160m, 2026-11-27), so the precise form stays."""
    x1, x2 = x.float().chunk(2, dim=-1)
    out = torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
    return out.to(x.dtype)


class Attention(nn.Module):
    """Multi-head attention. With ``qk_norm`` (OpenLM's ``--qk-norm``, on in the release's recipe)
    q and k are normalised by the model's norm over all ``d_model`` features, before the split
    into heads and before RoPE, each with its own gain."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_head, self.head_dim = cfg.n_head, cfg.head_dim
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.out = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.q_norm = _norm(cfg.norm, cfg.d_model) if cfg.qk_norm else None
        self.k_norm = _norm(cfg.norm, cfg.d_model) if cfg.qk_norm else None

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, mask: DocMask | None) -> Tensor:
        B, L, D = x.shape
        qkv = self.qkv(x)
        if self.q_norm is not None and self.k_norm is not None:
            q_, k_, v_ = qkv.chunk(3, dim=-1)
            qkv = torch.cat([self.q_norm(q_), self.k_norm(k_), v_], dim=-1)
        q, k, v = qkv.view(B, L, 3, self.n_head, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)  # [B, H, L, hd]
        y = attend(q, k, v, mask)
        return self.out(y.transpose(1, 2).reshape(B, L, D))


class FeedForward(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.kind = cfg.mlp
        width = 2 * cfg.d_ff if cfg.mlp == "swiglu" else cfg.d_ff
        self.up = nn.Linear(cfg.d_model, width, bias=False)
        self.down = nn.Linear(cfg.d_ff, cfg.d_model, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        h = self.up(x)
        if self.kind == "swiglu":
            gate, val = h.chunk(2, dim=-1)
            return self.down(F.silu(gate) * val)
        return self.down(F.gelu(h))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.norm1, self.norm2 = _norm(cfg.norm, cfg.d_model), _norm(cfg.norm, cfg.d_model)
        self.attn, self.mlp = Attention(cfg), FeedForward(cfg)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, mask: DocMask | None) -> Tensor:
        x = x + self.attn(self.norm1(x), cos, sin, mask)
        return x + self.mlp(self.norm2(x))


class GPT(nn.Module):
    """Decoder-only transformer; ``forward(input_ids [B, L]) -> logits [B, L, vocab]``."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.norm = _norm(cfg.norm, cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.head.weight = self.embed.weight
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Normal(0, init_std) weights; residual output projections scaled by 1/sqrt(2 n_layer)
        (GPT-2), so the residual stream's variance does not grow with depth."""
        std = self.cfg.init_std
        for name, p in self.named_parameters():
            if p.ndim < 2:
                nn.init.ones_(p)  # norm gains
            elif name.endswith(("attn.out.weight", "mlp.down.weight")):
                nn.init.normal_(p, 0.0, std / math.sqrt(2 * self.cfg.n_layer))
            else:
                nn.init.normal_(p, 0.0, std)

    def forward(
        self, input_ids: Tensor, position_ids: Tensor | None = None, mask: DocMask | None = None
    ) -> Tensor:
        B, L = input_ids.shape
        if position_ids is None:
            position_ids = torch.arange(L, device=input_ids.device).expand(B, L)
        cos, sin = rope_angles(position_ids, self.cfg.head_dim, self.cfg.rope_base)
        x = self.embed(input_ids)
        for block in self.blocks:
            x = block(x, cos, sin, mask)
        logits: Tensor = self.head(self.norm(x))
        return logits


def num_params(model: nn.Module) -> int:
    """Distinct parameters (a tied embedding counts once)."""
    return sum(p.numel() for p in model.parameters())


def matmul_params(cfg: ModelConfig) -> int:
    """``N`` of the FLOP count: weights used in matmuls (blocks + LM head; not the lookup)."""
    d = cfg.d_model
    mlp = 3 * d * cfg.d_ff if cfg.mlp == "swiglu" else 2 * d * cfg.d_ff
    return cfg.n_layer * (4 * d * d + mlp) + d * cfg.vocab_size


def train_flops(cfg: ModelConfig, tokens: int, attended_pairs: int) -> int:
    """Model FLOPs of one forward + backward over ``tokens`` with ``attended_pairs`` pairs."""
    return 6 * matmul_params(cfg) * tokens + 12 * cfg.n_layer * cfg.d_model * attended_pairs


def z_loss_sum(logits: Tensor, labels: Tensor) -> Tensor:
    """``sum(logsumexp(logits)^2)`` in float32 over the positions that have a target (labels
    not ``IGNORE_INDEX``): the z-loss of OpenLM's ``--z-loss-coefficient`` (PaLM), before the
    coefficient and the division by the step's targets that make it a mean."""
    lse = torch.logsumexp(logits.float(), dim=-1)
    return (lse.square() * (labels != IGNORE_INDEX)).sum()


def token_losses(logits: Tensor, labels: Tensor) -> Tensor:
    """Per-token cross entropy ``[B, L]`` in float32; 0 where ``labels == IGNORE_INDEX``."""
    B, L, V = logits.shape
    loss = F.cross_entropy(
        logits.float().view(B * L, V),
        labels.reshape(B * L),
        ignore_index=IGNORE_INDEX,
        reduction="none",
    )
    return loss.view(B, L)
