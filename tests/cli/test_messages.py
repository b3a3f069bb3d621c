"""Lines the CLI prints (issue 12 items 6 and 7): counts agree with stdout, nouns agree with
counts, no `x = x`, an empty validation split and an interrupt say what to do."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ddecomp.cli import main
from ddecomp.cli.prepare import summary_line
from ddecomp.errors import UserError
from ddecomp.loading.plan import check_tokens_per_step


def _manifest(docs: int, val_docs: int) -> dict[str, Any]:
    short = {"tokens": 5, "documents": 1}
    return {
        "totals": {"documents": docs, "tokens": 1000},
        "splits": {
            "train": {
                "kept_targets": 900,
                "dropped": {"document_shorter_than_min": short, "tail_below_min": {"tokens": 7}},
            },
            "val": {"documents": val_docs, "kept_targets": 40 if val_docs else 0},
        },
        "dropped": {"ingest": {"skipped": {"invalid_json": 1}}},
    }


def test_the_summary_line_counts_in_words_that_agree() -> None:
    one = summary_line(_manifest(1, 0), Path("d"))
    assert "d: 1 document, 1,000 tokens" in one
    assert "5 tokens in 1 document shorter than min" in one
    assert "1 input record skipped" in one
    assert "validation" not in one
    two = summary_line(_manifest(2, 1), Path("d"))
    assert "2 documents" in two
    assert "train buckets hold 900 targets, validation buckets 40" in two


def test_a_batch_error_does_not_say_x_equals_x() -> None:
    with pytest.raises(UserError) as e:
        check_tokens_per_step(3000, [256, 512], 1)
    assert "not a multiple of max length 512; use a multiple of 512" in str(e.value)


def test_an_empty_validation_split_is_warned(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "in"
    src.mkdir()
    (src / "only.py").write_text("print('one document only')\n" * 40)
    out = tmp_path / "ds"
    argv = ["prepare", str(src), "--out", str(out), "--vocab-size", "300", "--min-len", "8",
            "--max-len", "64", "--workers", "1", "--val-fraction", "0.1", "--quiet"]  # fmt: skip
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "1 document," in captured.out  # the .py file is a document (it was passed over)
    assert "--val-fraction 0.1 held out no document of 1: the validation split is empty" in (
        captured.err
    )


def test_an_interrupted_command_says_how_to_resume(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(_: object) -> int:
        raise KeyboardInterrupt

    import ddecomp.cli.prepare as prep

    monkeypatch.setattr(prep, "run_prepare", interrupted)
    assert main(["prepare", "--out", "x"]) == 130
    assert "interrupted; rerun the same command to resume" in capsys.readouterr().err


def test_the_plan_explains_its_oom_probe(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.training._corpus import TPS, make_dataset

    data = make_dataset(tmp_path / "ds", n_tokens=60_000)
    # No --tokens-per-step: plan now defaults it as train does (16,384, a multiple of 128).
    assert main(["plan", str(data)]) == 0
    out = capsys.readouterr().out
    assert "step 0 is the OOM probe" in out
    assert main(["plan", str(data), "--tokens-per-step", str(TPS)]) == 0
