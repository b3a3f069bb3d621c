"""Pure helpers of benchmarks/corpus.py: document selection, decoding, web-like re-cutting."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import corpus


@pytest.mark.parametrize(
    ("path", "keep"),
    [
        ("linux-source-6.1/Documentation/admin-guide/README.rst", True),
        ("linux-source-6.1/Documentation/dev-tools/kasan.txt", True),
        ("linux-source-6.1/Documentation/conf.py", False),
        ("linux-source-6.1/kernel/sched/core.c", True),
        ("linux-source-6.1/include/linux/mm.h", True),
        ("linux-source-6.1/arch/x86/kernel/setup.c", True),
        ("linux-source-6.1/arch/arm64/kernel/setup.c", False),
        ("linux-source-6.1/drivers/gpu/drm/drm_drv.c", False),
        ("linux-source-6.1/kernel/Makefile", False),
        ("linux-source-6.1/kernelx/a.c", False),
        ("linux-source-6.1", False),
    ],
)
def test_select_linux(path: str, keep: bool) -> None:
    assert corpus.select_linux(path) is keep


def test_decode_text() -> None:
    assert corpus.decode_text("héllo".encode()) == ("héllo", True)
    assert corpus.decode_text("héllo".encode("latin-1")) == ("héllo", False)
    assert corpus.decode_text(b"ab\x00cd")[0] is None
    assert corpus.decode_text(b" \n\t ")[0] is None


@settings(max_examples=60, deadline=None)
@given(
    total=st.integers(1, 200_000),
    mean=st.floats(1.0, 2_000.0),
    sigma=st.floats(0.1, 2.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_lognormal_lengths_exact_sum(total: int, mean: float, sigma: float, seed: int) -> None:
    lengths = corpus.lognormal_lengths(total, mean, sigma, seed)
    assert lengths.size > 0
    assert lengths.dtype == np.int64
    assert int(lengths.sum()) == total
    assert int(lengths.min()) >= 1


def test_lognormal_lengths_mean_and_seed() -> None:
    a = corpus.lognormal_lengths(3_000_000, 599.0, 1.0, seed=7)
    b = corpus.lognormal_lengths(3_000_000, 599.0, 1.0, seed=7)
    c = corpus.lognormal_lengths(3_000_000, 599.0, 1.0, seed=8)
    assert np.array_equal(a, b)
    assert not np.array_equal(a[:100], c[:100])
    assert 570 < a.mean() < 630, a.mean()
    # sigma 1 puts the median near exp(-1/2) = 0.61 of the mean.
    assert 0.55 < np.median(a) / a.mean() < 0.67


@settings(max_examples=60, deadline=None)
@given(
    docs=st.lists(st.integers(0, 300), min_size=1, max_size=40),
    mean=st.floats(1.0, 50.0),
    seed=st.integers(0, 1000),
)
def test_recut_keeps_every_token_in_order(docs: list[int], mean: float, seed: int) -> None:
    eos = 65_000
    # Token identity: content token = its position among content tokens (never equal to EOS).
    content = np.arange(sum(docs), dtype=np.uint16)
    parts, pos = [], 0
    for n in docs:
        parts += [content[pos : pos + n], np.array([eos], dtype=np.uint16)]
        pos += n
    assume(content.size > 0)
    tokens = np.concatenate(parts)
    lengths = corpus.lognormal_lengths(content.size, mean, 1.0, seed)
    out = corpus.recut(tokens, eos, lengths)
    assert out.dtype == np.uint16
    assert out[-1] == eos
    assert np.array_equal(out[out != eos], content)
    assert np.array_equal(corpus.doc_lengths(out, eos), lengths + 1)


def test_doc_lengths_and_summary() -> None:
    eos = 9
    tokens = np.array([1, 2, 9, 9, 3, 4, 5, 9], dtype=np.uint16)
    lengths = corpus.doc_lengths(tokens, eos)
    assert lengths.tolist() == [3, 1, 4]
    s = corpus.length_summary(lengths)
    assert s["documents"] == 3
    assert s["tokens"] == 8
    assert s["max"] == 4
    assert s["p50"] == 3.0
    assert s["share_docs_below_257"] == 1.0
    with pytest.raises(AssertionError):
        corpus.doc_lengths(np.array([1, 9, 2], dtype=np.uint16), eos)


def test_config_validation_quotes_values() -> None:
    with pytest.raises(ValueError, match="12"):
        corpus.CorpusConfig(target_tokens=12)
    with pytest.raises(ValueError, match="70000"):
        corpus.CorpusConfig(vocab_size=70_000)
