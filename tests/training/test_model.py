"""The reference GPT and document-masked attention: shapes, causality, masking, FLOP counts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ddecomp.attention_cost import causal_pairs, doc_mask_pairs
from ddecomp.errors import UserError
from ddecomp.loading.protocols import IGNORE_INDEX
from ddecomp.training.attention import make_doc_mask
from ddecomp.training.model import (
    GPT,
    ModelConfig,
    matmul_params,
    model_config,
    num_params,
    token_losses,
    train_flops,
)

CPU = torch.device("cpu")


def _model(**kw: object) -> GPT:
    torch.manual_seed(0)
    return GPT(model_config("tiny", 97, **kw)).eval()


def test_paper_shapes_have_the_paper_parameter_counts() -> None:
    # 50,432-token vocabulary (GPT-NeoX), untied: embedding + blocks + head.
    want = {"160m": 162.4e6, "410m": 411.6e6, "1b": 1439.7e6}
    for size, n in want.items():
        c = model_config(size, 50432)
        total = matmul_params(c) + c.d_model * c.vocab_size + (2 * c.n_layer + 1) * c.d_model
        assert abs(total - n) / n < 1e-3, (size, total)
    m = GPT(model_config("tiny", 1000))
    assert num_params(m) == matmul_params(m.cfg) + (2 * 2 + 1) * 64  # tied head: counted once


@pytest.mark.parametrize(("mlp", "norm"), [("swiglu", "rmsnorm"), ("gelu", "layernorm")])
def test_forward_shape_and_causality(mlp: str, norm: str) -> None:
    m = _model(mlp=mlp, norm=norm)
    x = torch.randint(0, 97, (2, 24))
    y = x.clone()
    y[:, 17:] = (y[:, 17:] + 1) % 97  # change the future only
    with torch.no_grad():
        a, b = m(x), m(y)
    assert a.shape == (2, 24, 97)
    torch.testing.assert_close(a[:, :17], b[:, :17])
    assert not torch.allclose(a[:, 17:], b[:, 17:])


def test_no_bias_anywhere() -> None:
    m = _model(norm="layernorm")
    assert not [n for n, _ in m.named_parameters() if n.endswith("bias")]


def test_packed_documents_with_mask_and_positions_equal_documents_alone() -> None:
    """Two documents in one row, with the doc mask and restarted RoPE positions, give exactly
    the logits each document gets alone; without the mask the second one sees the first."""
    m = _model()
    torch.manual_seed(1)
    d1, d2 = torch.randint(0, 97, (1, 11)), torch.randint(0, 97, (1, 21))
    row = torch.cat([d1, d2], dim=1)
    pos = torch.cat([torch.arange(11), torch.arange(21)])[None]
    mask = make_doc_mask(torch.tensor([0, 11, 32], dtype=torch.int32), 1, 32, CPU)
    with torch.no_grad():
        packed = m(row, pos, mask)
        alone1, alone2 = m(d1), m(d2)
        unmasked = m(row)
    torch.testing.assert_close(packed[:, :11], alone1, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(packed[:, 11:], alone2, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(unmasked[:, 11:], alone2, atol=1e-3)


def test_rope_scores_depend_on_relative_position_only() -> None:
    from ddecomp.training.model import apply_rope, rope_angles

    torch.manual_seed(2)
    q, k = torch.randn(1, 1, 1, 16), torch.randn(1, 1, 1, 16)

    def score(i: int, j: int) -> float:
        cos, sin = rope_angles(torch.tensor([[i, j]]), 16, 100_000.0)
        qi = apply_rope(q, cos[:, :, :1], sin[:, :, :1])
        kj = apply_rope(k, cos[:, :, 1:], sin[:, :, 1:])
        return float((qi * kj).sum())

    assert score(7, 3) == pytest.approx(score(107, 103), rel=1e-4)
    assert score(7, 3) != pytest.approx(score(7, 5), rel=1e-3)


def test_one_document_per_row_is_plain_causal() -> None:
    cu = torch.arange(0, 3 * 8 + 1, 8, dtype=torch.int32)
    assert doc_mask_pairs(cu.numpy(), 8, 3 * 8) == causal_pairs(8, 3) == 3 * 36
    m = _model()
    x = torch.randint(0, 97, (3, 8))
    with torch.no_grad():
        torch.testing.assert_close(m(x, None, make_doc_mask(cu, 3, 8, CPU)), m(x))


def test_train_flops_formula() -> None:
    c = model_config("160m", 50432)
    n = matmul_params(c)
    # per token of a causal row of length L: 6N + 6 * n_layer * d * (L + 1)
    L = 2048
    assert train_flops(c, L, causal_pairs(L)) == L * (6 * n + 6 * 12 * 768 * (L + 1))


def test_token_losses_ignore_padding() -> None:
    logits = torch.zeros(1, 3, 5)
    labels = torch.tensor([[1, IGNORE_INDEX, 4]])
    tl = token_losses(logits, labels)
    assert tl[0, 1] == 0
    assert tl[0, 0] == pytest.approx(np.log(5))


@pytest.mark.parametrize(
    ("kw", "msg"),
    [
        ({"d_model": 60, "n_head": 8}, "n_head=8"),
        ({"norm": "batchnorm"}, "batchnorm"),
        ({"rope_base": 1.0}, "rope_base=1.0"),
        ({"n_layer": 0}, "n_layer=0"),
    ],
)
def test_config_errors_quote_the_value(kw: dict[str, object], msg: str) -> None:
    with pytest.raises(UserError, match=msg):
        model_config("tiny", 100, **kw)
    with pytest.raises(UserError, match="unknown model size"):
        model_config("7b", 100)
    assert isinstance(model_config("small", 100), ModelConfig)


@pytest.mark.parametrize("masked", [False, True])
def test_bf16_autocast_path_trains(masked: bool) -> None:
    """The GPU's bf16 autocast path, run under CPU autocast: the logits stay close to fp32's and
    the backward gives finite, non-zero gradients to every parameter."""
    m = _model().train()
    x = torch.randint(0, 97, (2, 64))
    pos, mask = None, None
    if masked:
        cu = torch.tensor([0, 20, 64, 100, 128], dtype=torch.int32)
        mask = make_doc_mask(cu, 2, 64, CPU)
        pos = torch.cat([torch.arange(20), torch.arange(44), torch.arange(36), torch.arange(28)])
        pos = pos.view(2, 64)
    ref = m(x, pos, mask).detach()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = m(x, pos, mask)
    assert logits.dtype == torch.bfloat16
    torch.testing.assert_close(logits.float(), ref, rtol=0.05, atol=0.05)
    token_losses(logits, x).sum().backward()
    grads = [p.grad for p in m.parameters()]
    assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads)
    assert all(float(g.abs().sum()) > 0 for g in grads if g is not None)
