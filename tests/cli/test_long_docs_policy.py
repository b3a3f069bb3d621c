"""The long-document policy: ``spread`` (the release's) by default, recorded, and printed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ddecomp.cli import main
from ddecomp.data.dataset import open_dataset
from ddecomp.decompose import describe_long_docs, long_docs_of
from ddecomp.preparing.pipeline import TokensConfig, prepare_tokens
from tests._fixtures import identity_tokens

EOS = 1 << 20


def test_a_default_prepare_records_spread_and_stats_and_plan_print_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lens = np.array([700, 40, 3000, 90, 1200] * 4)  # several documents above 2 x max targets
    man = prepare_tokens(
        TokensConfig(identity_tokens(lens, EOS), tmp_path, EOS, min_len=16, max_len=128)
    )
    assert man["long_docs"] == "spread"
    split = tmp_path.parent / (tmp_path.name + "_split")
    prepare_tokens(
        TokensConfig(
            identity_tokens(lens, EOS), split, EOS, min_len=16, max_len=128, long_docs="split"
        )
    )
    ds, ds_split = open_dataset(tmp_path), open_dataset(split)
    assert ds.num_rows(16) > ds_split.num_rows(16)  # spread puts long documents in short buckets
    assert main(["stats", str(tmp_path)]) == 0
    assert "long documents: spread (random lengths" in capsys.readouterr().out
    assert main(["plan", str(split), "--tokens-per-step", "1024"]) == 0
    assert "long documents: split (max-length pieces: OLMo-core's)" in capsys.readouterr().out
    assert main(["plan", str(tmp_path), str(split), "--tokens-per-step", "1024"]) == 0
    out = capsys.readouterr().out
    assert f"long documents of {split}: split" in out
    assert f"long documents of {tmp_path}: spread" in out


def test_a_manifest_without_the_field_is_unknown_not_guessed() -> None:
    assert long_docs_of({}) == "unknown"
    assert long_docs_of({"long_docs": "random"}) == "unknown"
    assert long_docs_of({"long_docs": "split"}) == "split"
    assert "not recorded" in describe_long_docs("unknown")
