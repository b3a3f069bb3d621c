"""Progress of long jobs: a tqdm bar on a terminal, plain log lines with ``--quiet`` or no tty.

Counts documents and tokens and shows tokens/s since the start; shards skipped on resume are
counted separately so the rate reflects only the work done in this run. Given the ``expected``
number of shards, the ETA is the time per shard done in this run times the shards left.
"""

from __future__ import annotations

import logging
import sys
import time
from types import TracebackType
from typing import Never

from tqdm import tqdm

log = logging.getLogger("ddecomp.preparing.progress")


class Progress:
    def __init__(self, quiet: bool, desc: str = "prepare", expected: int | None = None) -> None:
        self.expected = expected
        self.resumed_shards = 0
        self.docs = 0
        self.tokens = 0
        self.resumed_tokens = 0
        self.shards = 0
        self.t0 = time.perf_counter()
        self.desc = desc
        self._bar: tqdm[Never] | None = None
        if not quiet and sys.stderr.isatty():
            self._bar = tqdm(unit="doc", desc=desc, dynamic_ncols=True)

    def rate(self) -> float:
        dt = time.perf_counter() - self.t0
        return (self.tokens - self.resumed_tokens) / dt if dt > 0 else 0.0

    def eta(self) -> str:
        """``ETA 1m05s`` from this run's shards per second; empty before the first one."""
        ran = self.shards - self.resumed_shards
        if not self.expected or ran <= 0:
            return ""
        left = max(self.expected - self.shards, 0) * (time.perf_counter() - self.t0) / ran
        return f", ETA {int(left) // 60}m{int(left) % 60:02d}s"

    def update(self, docs: int, tokens: int, resumed: bool = False) -> None:
        self.docs += docs
        self.tokens += tokens
        self.shards += 1
        if resumed:
            self.resumed_tokens += tokens
            self.resumed_shards += 1
        if self._bar is not None:
            self._bar.update(docs)
            self._bar.set_postfix_str(
                f"{self.tokens / 1e6:.1f}M tok, {self.rate() / 1e6:.2f}M tok/s{self.eta()}"
            )
        else:
            log.info(
                "%s: shard %d%s: %d documents, %.1fM tokens so far, %.2fM tokens/s%s",
                self.desc,
                self.shards,
                " (kept from an earlier run)" if resumed else "",
                self.docs,
                self.tokens / 1e6,
                self.rate() / 1e6,
                self.eta(),
            )

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.close()
