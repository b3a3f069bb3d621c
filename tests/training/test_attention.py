"""Document-masked attention: document ids, pair counts, and the GPU path's flex block mask,
checked on the CPU (flex attention's forward runs there) against the dense reference mask."""

from __future__ import annotations

import itertools

import numpy as np
import torch
import torch._dynamo
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from ddecomp.attention_cost import causal_pairs, doc_mask_pairs
from ddecomp.training.attention import (
    FLEX_BLOCK,
    attend,
    doc_ids_from_cu_seqlens,
    flex_block_mask,
    make_doc_mask,
)
from ddecomp.training.model import GPT, model_config

CPU = torch.device("cpu")
_BLOCK_FIELDS = (
    "kv_num_blocks",
    "kv_indices",
    "full_kv_num_blocks",
    "full_kv_indices",
    "q_num_blocks",
    "q_indices",
    "full_q_num_blocks",
    "full_q_indices",
)


def _cu(batch: int, seq_len: int, cuts: list[int]) -> torch.Tensor:
    total = batch * seq_len
    return torch.tensor(sorted({0, total, *(c % total for c in cuts)}), dtype=torch.int32)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 4),
    st.integers(1, 40),
    st.lists(st.integers(1, 160), min_size=1, max_size=30),
)
def test_doc_ids_and_pairs_match_the_dense_mask(batch: int, seq_len: int, cuts: list[int]) -> None:
    cu = _cu(batch, seq_len, cuts)
    bounds = cu.tolist()
    ids = doc_ids_from_cu_seqlens(cu, batch, seq_len).flatten().numpy()
    # reference: token t belongs to document j with bounds[j] <= t < bounds[j + 1]
    ref = np.concatenate([np.full(b - a, j) for j, (a, b) in enumerate(itertools.pairwise(bounds))])
    assert ids.size == batch * seq_len
    np.testing.assert_array_equal(ids, ref)
    dense = make_doc_mask(cu, batch, seq_len, CPU).dense
    assert dense is not None
    pairs = doc_mask_pairs(cu.numpy(), seq_len, batch * seq_len)
    assert pairs == int(dense.sum())
    assert pairs <= causal_pairs(seq_len, batch)


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 3),
    st.sampled_from([1, 100, 128, 256, 300, 640]),
    st.lists(st.integers(1, 2000), max_size=12),
)
def test_flex_block_mask_equals_create_block_mask(
    batch: int, seq_len: int, cuts: list[int]
) -> None:
    """The boundary-built block mask is the one ``create_block_mask`` gets by evaluating every
    pair: same partial and full tiles, same index order, same dense expansion."""
    from torch.nn.attention.flex_attention import create_block_mask

    doc = doc_ids_from_cu_seqlens(_cu(batch, seq_len, cuts), batch, seq_len)

    def mask_mod(b: Tensor, h: Tensor, q: Tensor, kv: Tensor) -> Tensor:
        return (doc[b, q] == doc[b, kv]) & (q >= kv)

    ref = create_block_mask(mask_mod, batch, None, seq_len, seq_len, device=CPU)
    got = flex_block_mask(doc)
    for name in _BLOCK_FIELDS:
        assert torch.equal(getattr(got, name), getattr(ref, name)), name
    assert got.seq_lengths == ref.seq_lengths == (seq_len, seq_len)
    assert torch.equal(got.to_dense(), ref.to_dense())


def test_flex_block_mask_skips_tiles_outside_documents() -> None:
    """Vacuity guard for the equality above: with short documents most tiles are skipped, and a
    row that is one document has only full tiles below the diagonal."""
    L = 8 * FLEX_BLOCK
    one_doc = flex_block_mask(doc_ids_from_cu_seqlens(torch.tensor([0, L]), 1, L))
    assert int(one_doc.kv_num_blocks.sum()) == 8  # the diagonal tiles
    assert int(one_doc.full_kv_num_blocks.sum()) == 8 * 7 // 2
    short = flex_block_mask(doc_ids_from_cu_seqlens(torch.arange(0, L + 1, FLEX_BLOCK // 2), 1, L))
    assert int(short.kv_num_blocks.sum()) == 8
    assert int(short.full_kv_num_blocks.sum()) == 0


def test_flex_attention_equals_the_dense_mask_without_recompiling() -> None:
    """The GPU path (compiled flex attention with a fresh block mask per step) gives the dense
    reference's outputs, and new masks of the same shape reuse the first compilation."""
    B, H, L, hd = 2, 2, 384, 16
    g = torch.Generator().manual_seed(0)
    for step in range(3):
        cuts = (torch.randperm(B * L - 1, generator=g)[:7] + 1).tolist()
        cu = _cu(B, L, cuts)
        flex = make_doc_mask(cu, B, L, CPU, kind="flex")
        dense = make_doc_mask(cu, B, L, CPU, kind="dense")
        assert flex.block_mask is not None
        assert dense.dense is not None
        q, k, v = (torch.randn(B, H, L, hd, generator=g) for _ in range(3))
        with torch.no_grad(), torch._dynamo.config.patch(error_on_recompile=step > 0):
            out = attend(q, k, v, flex)
        torch.testing.assert_close(out, attend(q, k, v, dense), rtol=1e-5, atol=1e-5)
        # the mask matters: plain causal attention differs across the documents' boundaries
        assert not torch.allclose(out, F.scaled_dot_product_attention(q, k, v, is_causal=True))


def test_model_with_flex_mask_equals_dense_mask() -> None:
    torch.manual_seed(0)
    m = GPT(model_config("tiny", 97)).eval()
    B, L = 2, 256
    cu = torch.tensor([0, 50, 300, 301, 512], dtype=torch.int32)
    x = torch.randint(0, 97, (B, L))
    with torch.no_grad():
        flex = m(x, None, make_doc_mask(cu, B, L, CPU, kind="flex"))
        dense = m(x, None, make_doc_mask(cu, B, L, CPU, kind="dense"))
    torch.testing.assert_close(flex, dense, rtol=1e-4, atol=1e-4)
