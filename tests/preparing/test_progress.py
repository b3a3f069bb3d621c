"""What prepare shows while it runs (issue 12 item 4): log lines above the bar, a bar over the
input with a percentage, a resume said as such, plain lines that say their counts are totals."""

from __future__ import annotations

import io
import logging
import re
import sys

import pytest

from ddecomp.preparing.progress import Progress


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_log_lines_go_above_the_bar_not_into_it(monkeypatch: pytest.MonkeyPatch) -> None:
    tty = _Tty()
    monkeypatch.setattr(sys, "stderr", tty)
    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)  # as logging.basicConfig installs it
    handler.setFormatter(logging.Formatter("ddecomp: %(message)s"))
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.INFO)
    try:
        with Progress(quiet=False) as bar:
            bar.update(3, 300)
            logging.getLogger("ddecomp.preparing.ingest").warning("a.jsonl:4: skipped")
            bar.update(2, 200)
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    out = tty.getvalue()
    assert "prepare" in out  # vacuity guard: a bar was drawn
    segments = [s for s in re.split(r"[\r\n]", out) if "skipped" in s]
    assert segments == ["ddecomp: a.jsonl:4: skipped"]  # alone on its line


def test_plain_lines_say_totals_share_and_resume(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    with Progress(quiet=True, total=100) as bar:
        bar.update(10, 1000, True, 40)  # kept from an earlier run
        bar.update(5, 500, size=30)
        assert bar.rate() >= 0
        assert bar.tokens - bar.resumed_tokens == 500  # the rate counts this run's tokens only
    text = caplog.text
    assert "resuming: 1 shard kept from an earlier run (10 documents)" in text
    assert "shard 1 done (kept from an earlier run); so far 10 documents" in text
    assert "shard 2 done; so far 15 documents, 0.0M tokens, 70% of the input" in text
    assert "s left" in text  # an ETA from this run's own pace


def test_a_run_that_kept_every_shard_still_says_it_resumed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    with Progress(quiet=True, total=10) as bar:
        bar.update(4, 40, True, 5)
        bar.update(4, 40, True, 5)
    assert "resuming: 2 shards kept from an earlier run (8 documents)" in caplog.text
