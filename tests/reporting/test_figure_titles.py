"""Figure titles say what a reader needs (issue 12 item 8): the plan's tokens per step and its
OOM probe, the comparison's data, model and run length."""

from __future__ import annotations

from pathlib import Path

import pytest
from matplotlib.figure import Figure

import ddecomp.reporting.plots as plots
from ddecomp.cli import main
from ddecomp.reporting.compare import load_run
from ddecomp.training.loop import train
from tests.training._corpus import TPS, cfg_for, make_dataset


def _capture(monkeypatch: pytest.MonkeyPatch) -> list[Figure]:
    figs: list[Figure] = []
    monkeypatch.setattr(plots, "save_png_atomic", lambda fig, path: figs.append(fig))
    return figs


def _texts(fig: Figure) -> str:
    parts = [fig.get_suptitle()]
    for ax in fig.axes:
        parts += [ax.get_title(), ax.get_xlabel(), ax.get_ylabel()]
        parts += [t.get_text() for t in ax.texts]
    return "\n".join(parts)


def test_the_plan_figure_names_tokens_per_step_unit_and_probe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = make_dataset(tmp_path / "ds", n_tokens=60_000)
    figs = _capture(monkeypatch)
    assert main(["plan", str(data), "--tokens-per-step", str(TPS), "--plot", "x.png"]) == 0
    (fig,) = figs
    text = _texts(fig)
    assert f"{TPS:,} tokens per step" in text
    assert "step 0 is the OOM probe" in text
    assert "sequence length L (tokens)" in text


def test_the_comparison_names_data_model_and_length(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = make_dataset(tmp_path / "ds", n_tokens=60_000)
    train(cfg_for(data, tmp_path / "dd", tokens=2 * TPS, warmup=1))
    figs = _capture(monkeypatch)
    plots.plot_runs([load_run(tmp_path / "dd")], "x.png")
    (fig,) = figs
    title = fig.get_suptitle()
    assert str(data) in title
    assert "tiny GPT" in title
    assert f"{2 * TPS:,} tokens per run" in title
    # One evaluation only: the val-vs-time panel says what would make it useful.
    assert "--eval-every" in _texts(fig)
