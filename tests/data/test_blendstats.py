"""``ddecomp stats DIR DIR``: a blend's per-source bucket shares."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ddecomp import Blend, TokensConfig, prepare_tokens
from ddecomp.cli import main
from ddecomp.data.blendstats import blend_stats, source_names
from tests._fixtures import EOS, identity_tokens, random_lengths


@pytest.fixture(scope="module")
def short_long(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("sl")
    out = []
    for name, lo, hi in (("short", 17, 60), ("long", 300, 600)):
        toks = identity_tokens(random_lengths(200, seed=1, lo=lo, hi=hi))
        cfg = TokensConfig(toks, root / name, eos_id=EOS, min_len=16, max_len=256, vocab_size=2**31)
        prepare_tokens(cfg)
        out.append(root / name)
    return out[0], out[1]


def test_per_source_bucket_shares(short_long: tuple[Path, Path]) -> None:
    blend = Blend([(short_long[0], 1.0), (short_long[1], 0.5)], seed=0)
    s = blend_stats(blend)
    assert s["names"] == source_names(blend) == ["short", "long"]
    served = [p["served_targets"] for p in s["blend"]["sources"]]
    for i in range(2):
        assert sum(b["targets"][i] for b in s["buckets"]) == served[i] > 0
        assert sum(b["share_of_source"][i] for b in s["buckets"]) == pytest.approx(1.0)
    for b in s["buckets"]:
        if sum(b["targets"]):
            assert sum(b["share_of_bucket"]) == pytest.approx(1.0)
    by_l = {b["L"]: b for b in s["buckets"]}
    # the short source is all short buckets, the long one mostly long
    assert sum(by_l[L]["share_of_source"][0] for L in (16, 32)) == pytest.approx(1.0)
    assert by_l[256]["share_of_bucket"][1] == pytest.approx(1.0)
    assert np.isclose(by_l[16]["share_of_bucket"][0], 1.0) or by_l[16]["targets"][1] > 0


def test_the_cli(short_long: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    dirs = [str(d) for d in short_long]
    assert main(["stats", *dirs, "--shares", "0.5,0.5"]) == 0
    out = capsys.readouterr().out
    assert "blend of 2 datasets" in out
    assert "per source and bucket" in out
    assert main(["stats", *dirs, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["names"] == ["short", "long"]
    assert main(["stats", dirs[0]]) == 0  # one DIR: the dataset's own report, as before
    assert "bucket L" in capsys.readouterr().out
    assert main(["stats", *dirs, "--plot", "x.png"]) == 2
