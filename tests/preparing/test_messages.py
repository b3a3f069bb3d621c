"""One-line messages a user reads (issue 12 item 7): no doubled words, a hint where one helps,
n/a without a unit."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from ddecomp.data.dataset import open_dataset
from ddecomp.data.stats import compute_stats, format_stats
from ddecomp.preparing.ingest import IngestStats, iter_documents
from tests.data.test_stats import HAND_LENGTHS, prepared


def test_json_and_field_skips_read_cleanly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    f = tmp_path / "a.jsonl"
    f.write_text('{"text": "ok"}\n{"text": "unterminated\n{"body": "x"}\n')
    stats = IngestStats()
    with caplog.at_level(logging.WARNING):
        docs = list(iter_documents([f], stats=stats))
    assert docs == ["ok"]
    assert {k: v for k, v in stats.skipped.items() if v} == {"invalid_json": 1, "missing_field": 1}
    text = caplog.text
    assert "a.jsonl:2: skipped (invalid_json): Invalid control character at (column 23)" in text
    assert " at at " not in text
    assert "no field 'text' (fields: body); name the text's field with --text-field" in text


def test_stats_of_an_empty_split_print_na_without_units(tmp_path: Path) -> None:
    root = prepared(tmp_path, HAND_LENGTHS, min_len=8, max_len=64)
    empty = format_stats(compute_stats(open_dataset(root, "val")))
    assert "n/a" in empty  # vacuity guard: values are missing here
    assert "n/a%" not in empty
    assert "n/ax" not in empty
    full = format_stats(compute_stats(open_dataset(root, "train")))
    assert "100.0%" in full
    assert "x  (DD / C&C+doc mask" in full  # the units are still printed where there is a value
