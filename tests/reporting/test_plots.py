"""Tests of ddecomp.reporting.plots: valid PNGs of sensible size, atomic writes, empty buckets and
splits."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ddecomp.data.dataset import open_dataset
from ddecomp.data.stats import compute_stats
from ddecomp.errors import UserError
from ddecomp.preparing.pipeline import TokensConfig, prepare_tokens
from ddecomp.reporting.plots import plot_plan, plot_stats

EOS = 1_000_000
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk; asserts the file is a PNG."""
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert data[12:16] == b"IHDR"
    w, h = struct.unpack(">II", data[16:24])
    assert data.endswith(b"IEND\xaeB`\x82")  # complete file, not a truncated write
    return w, h


def assert_sensible_png(path: Path) -> None:
    w, h = png_size(path)
    assert 800 <= w <= 2000
    assert 600 <= h <= 1500
    assert path.stat().st_size > 20_000  # text, bars and curves, not a blank canvas
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temp file left


def stats_for(tmp_path: Path, lengths: list[int], split: str = "train") -> dict[str, Any]:
    toks = np.arange(sum(lengths), dtype=np.uint32)
    toks[np.cumsum(lengths) - 1] = EOS
    out = tmp_path / "ds"
    prepare_tokens(TokensConfig(toks, out, eos_id=EOS, min_len=8, max_len=64))
    return compute_stats(open_dataset(out, split=split))


@pytest.fixture
def web_stats(tmp_path: Path) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    lengths = np.maximum(1, rng.lognormal(np.log(40), 1.0, size=400).astype(int)).tolist()
    return stats_for(tmp_path, lengths)


def test_plot_stats_writes_png(tmp_path: Path, web_stats: dict[str, Any]) -> None:
    assert all(b["rows"] > 0 for b in web_stats["buckets"])  # every bucket drawn
    out_dir = tmp_path / "plots"
    out_dir.mkdir()
    plot_stats(web_stats, out_dir / "stats.png")
    assert_sensible_png(out_dir / "stats.png")


def test_plot_stats_empty_bucket(tmp_path: Path) -> None:
    s = stats_for(tmp_path, [9, 65, 10, 70])  # buckets 16 and 32 stay empty
    assert [b["rows"] for b in s["buckets"]] == [2, 0, 0, 2]
    out_dir = tmp_path / "plots"
    out_dir.mkdir()
    plot_stats(s, out_dir / "stats.png")
    assert_sensible_png(out_dir / "stats.png")


def test_plot_stats_empty_split(tmp_path: Path) -> None:
    s = stats_for(tmp_path, [9, 65], split="val")  # no validation documents
    assert s["num_documents"] == 0
    out_dir = tmp_path / "plots"
    out_dir.mkdir()
    plot_stats(s, out_dir / "stats.png")
    assert png_size(out_dir / "stats.png")[0] >= 800


def test_failed_write_leaves_no_temp(tmp_path: Path, web_stats: dict[str, Any]) -> None:
    """The rename onto the target fails (it is a directory): a user error, no temp file left."""
    out_dir = tmp_path / "plots"
    (out_dir / "stats.png").mkdir(parents=True)
    with pytest.raises(UserError, match="cannot write there"):
        plot_stats(web_stats, out_dir / "stats.png")
    assert [p.name for p in out_dir.iterdir()] == ["stats.png"]
    assert (out_dir / "stats.png").is_dir()


def test_replaces_existing_file_and_draws_dollar_signs(
    tmp_path: Path, web_stats: dict[str, Any]
) -> None:
    out_dir = tmp_path / "plots"
    out_dir.mkdir()
    target = out_dir / "stats.png"
    target.write_bytes(b"old")
    # A '$...$' path would be parsed as (broken) mathtext if not escaped.
    plot_stats({**web_stats, "root": r"/data/$\notacommand{$"}, target)
    assert_sensible_png(target)
    plot_plan(np.array([8, 16]), {8: 8, 16: 16}, out_dir / "plan.png", title=r"$\bad{$")
    assert png_size(out_dir / "plan.png")[0] >= 800


def test_plot_path_errors_are_user_errors(tmp_path: Path, web_stats: dict[str, Any]) -> None:
    with pytest.raises(UserError, match=r"\.png"):
        plot_stats(web_stats, tmp_path / "stats.jpg")
    with pytest.raises(UserError, match="does not exist"):
        plot_stats(web_stats, tmp_path / "missing" / "stats.png")
    with pytest.raises(UserError, match="does not exist"):
        plot_plan(np.array([8]), {8: 8}, tmp_path / "missing" / "plan.png")
    assert [p.name for p in tmp_path.iterdir() if p.suffix in {".png", ".jpg", ".tmp"}] == []


def grow_cycles(cycles: int, per_bucket: int, lengths: list[int]) -> np.ndarray:
    """Short-to-long saw-tooth: each cycle runs through the buckets in increasing length."""
    return np.tile(np.repeat(np.array(lengths), per_bucket), cycles)


@pytest.mark.parametrize("per_bucket", [10, 500])  # 480 steps: every step; 24,000: running mean
def test_plot_plan_writes_png(tmp_path: Path, per_bucket: int) -> None:
    lengths = [256, 512, 1024, 2048, 4096, 8192]
    steps = grow_cycles(8, per_bucket, lengths)
    tokens = {L: int((steps == L).sum()) * 65_536 for L in lengths}
    out_dir = tmp_path / "plots"
    out_dir.mkdir()
    plot_plan(steps, tokens, out_dir / "plan.png", title="Grow-P2, 8 cycles")
    assert_sensible_png(out_dir / "plan.png")


def test_plot_plan_empty_bucket_and_no_steps(tmp_path: Path) -> None:
    out_dir = tmp_path / "plots"
    out_dir.mkdir()
    steps = grow_cycles(2, 10, [256, 1024])
    plot_plan(steps, {256: 5120, 512: 0, 1024: 20480}, out_dir / "plan.png")
    assert_sensible_png(out_dir / "plan.png")
    plot_plan(np.zeros(0, dtype=np.int64), {256: 0, 512: 0}, out_dir / "empty.png")
    assert png_size(out_dir / "empty.png")[0] >= 800
