"""Progress of long jobs: a tqdm bar on a terminal, plain log lines with ``--quiet`` or no tty.

The bar measures the input (``total`` units: bytes of text files, or tokens of ``--from-tokens``
input), so it has a percentage and an ETA; where the input's size in those units is not known
ahead (compressed or JSON inputs, whose file bytes are not text bytes) it counts documents. Its
postfix counts documents and tokens and shows tokens/s of this run's work only: shards kept from
an earlier run are counted apart, said once as "resuming: k shards kept", and left out of every
rate. While the bar is shown, log records (skipped inputs, notes) are written above it, never
into it. Plain lines (off a terminal, or ``--quiet``) say per shard that the counts are totals
so far.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from types import TracebackType
from typing import Never

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

log = logging.getLogger("ddecomp.preparing.progress")


class Progress:
    """``update(docs, tokens, resumed, size)`` once per finished shard; ``size`` advances the bar
    by that many input units when ``total`` is given."""

    def __init__(
        self, quiet: bool, desc: str = "prepare", total: int | None = None, unit: str = "B"
    ) -> None:
        self.docs = 0
        self.tokens = 0
        self.resumed_tokens = 0
        self.resumed_shards = 0
        self.shards = 0
        self.done_units = self.resumed_units = 0
        self.total = total
        self.unit = unit
        self.t0 = time.perf_counter()
        self.desc = desc
        self._said_resume = False
        self._bar: tqdm[Never] | None = None
        self._redirect: contextlib.ExitStack | None = None
        if not quiet and sys.stderr.isatty():
            if total:
                self._bar = tqdm(
                    total=total, unit=unit, unit_scale=True, desc=desc, dynamic_ncols=True
                )
            else:
                self._bar = tqdm(unit="doc", desc=desc, dynamic_ncols=True)
            # Log records go above the bar (tqdm.write) instead of being written over it.
            self._redirect = contextlib.ExitStack()
            self._redirect.enter_context(logging_redirect_tqdm([logging.getLogger()]))

    def rate(self) -> float:
        """Tokens per second of this run's own work (kept shards excluded)."""
        dt = time.perf_counter() - self.t0
        return (self.tokens - self.resumed_tokens) / dt if dt > 0 else 0.0

    def eta(self) -> float | None:
        """Seconds left at this run's rate over the input units, or None when unknown."""
        if not self.total:
            return None
        new = self.done_units - self.resumed_units
        dt = time.perf_counter() - self.t0
        left = max(0, self.total - self.done_units)
        return left * dt / new if new > 0 and dt > 0 else None

    def _say_resume(self) -> None:
        if self.resumed_shards and not self._said_resume:
            self._said_resume = True
            log.info(
                "%s: resuming: %d shard%s kept from an earlier run (%d documents)",
                self.desc,
                self.resumed_shards,
                "" if self.resumed_shards == 1 else "s",
                self.docs,
            )

    def update(self, docs: int, tokens: int, resumed: bool = False, size: int = 0) -> None:
        if not resumed:
            self._say_resume()  # before this shard's counts: the kept shards' documents
        self.docs += docs
        self.tokens += tokens
        self.shards += 1
        self.done_units += size
        if resumed:
            self.resumed_tokens += tokens
            self.resumed_shards += 1
            self.resumed_units += size
            self.t0 = time.perf_counter()  # the rate and ETA measure this run's work only
        if self._bar is not None:
            self._bar.update(size if self.total else docs)
            if resumed:  # kept shards took no time: keep them out of tqdm's rate too
                self._bar.start_t = self._bar.last_print_t = time.time()
                self._bar.last_print_n = self._bar.n
            self._bar.set_postfix_str(
                f"{self.docs:,} docs, {self.tokens / 1e6:.1f}M tok, {self.rate() / 1e6:.2f}M tok/s"
            )
            return
        eta = self.eta()
        share = f", {100 * self.done_units / self.total:.0f}% of the input" if self.total else ""
        left = f", about {eta:,.0f} s left" if eta is not None else ""
        log.info(
            "%s: shard %d done%s; so far %s documents, %.1fM tokens%s; %.2fM tokens/s%s",
            self.desc,
            self.shards,
            " (kept from an earlier run)" if resumed else "",
            f"{self.docs:,}",
            self.tokens / 1e6,
            share,
            self.rate() / 1e6,
            left,
        )

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._say_resume()  # every shard was kept: still say so
        if self._bar is not None:
            if exc_type is None and self.total:
                self._bar.n = self.total  # skipped inputs are read too: the input is done
                self._bar.refresh()
            self._bar.close()
        if self._redirect is not None:
            self._redirect.close()
