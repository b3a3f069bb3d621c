"""What a run writes: config, per-step metrics, evaluations, summary, and the progress bar.

Files of ``RUN/`` (only rank 0 writes; every line is flushed as it is written, so a run killed at
any point leaves complete lines):

- ``config.json``: the train config, model shape, world size, dataset fingerprint, versions;
- ``metrics.jsonl``: one object per optimizer step: ``step`` (1-based), ``seq_len``, ``loss``
  (mean over the step's target tokens, all ranks), ``lr``, ``tokens`` (seen so far, global),
  ``elapsed_s`` (training seconds so far), ``step_s``, ``tokens_per_s`` (this step),
  ``grad_norm``, ``flops`` (model FLOPs of the step, :func:`ddecomp.training.model.train_flops`)
  and ``mfu``
  (``flops / step_s / (peak * world_size)``; null when the device's peak is unknown, e.g. a CPU,
  unless ``peak_flops`` is given);
- ``eval.jsonl``: one object per evaluation (``step``, ``tokens``, ``elapsed_s`` + the result of
  :func:`ddecomp.training.evaluate.evaluate`);
- ``summary.json``: written at the end (or at ``stop_after``).

On resume the two logs are cut back to the checkpoint's step, so lines of steps that are about to
be repeated are not kept twice. A run killed in the middle of a write can leave a partial last
line (no newline, not JSON): readers drop it, and resume cuts it off with the repeated steps. An
unreadable line anywhere else is damage, not a kill, and is an error naming the file and line.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ddecomp.errors import UserError
from ddecomp.io import parse_json, write_bytes_atomic, write_json_atomic

if TYPE_CHECKING:  # torch is imported only to train: `ddecomp compare` reads these logs without it
    import torch

# Dense bf16 peak FLOP/s per GPU, by substring of the device name (vendor data sheets).
_PEAKS = (("H200", 989.4e12), ("H100", 989.4e12), ("A100", 312e12), ("L40S", 362e12))


def peak_flops_for(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    import torch

    name = torch.cuda.get_device_name(device)
    return next((p for key, p in _PEAKS if key in name), None)


def open_run_dir(run: Path) -> None:
    """Create ``run`` and prove it writable (a temporary file), so an unwritable ``--out`` is one
    line before the setup rather than a traceback after it."""
    try:
        run.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=run):
            pass
    except OSError as e:
        raise UserError(
            f"--out {run}: cannot write there ({e.strerror or e}); choose a writable directory"
        ) from e


def _records(path: Path) -> list[tuple[bytes, dict[str, Any]]]:
    """Each line of a JSON-lines log with its object; a partial last line is dropped.

    A writer killed mid-line leaves its last line without the newline every complete line ends
    with; such a line is dropped unless it is a whole JSON object (killed just before the
    newline). Any other line that is not a JSON object is damage: a :class:`UserError`.
    """
    lines = path.read_bytes().split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline, as a complete log does
    out = []
    for i, line in enumerate([*lines, tail], 1):
        if not line.strip():
            continue
        try:
            rec = parse_json(line)
        except ValueError:  # JSONDecodeError and UnicodeDecodeError
            rec = None
        if isinstance(rec, dict):
            out.append((line + b"\n", rec))
        elif i <= len(lines):
            raise UserError(
                f"{path}:{i}: not a JSON object; the log is damaged: restore it or start a new "
                "run with another --out"
            )
    return out


def _truncate_jsonl(path: Path, last_step: int) -> None:
    if not path.exists():
        return
    keep = []
    for i, (line, rec) in enumerate(_records(path), 1):
        if not isinstance(rec.get("step"), int):
            raise UserError(f"{path}: record {i} has no step; restore the log or use a new --out")
        if rec["step"] <= last_step:
            keep.append(line)
    write_bytes_atomic(path.parent, path.name, keep)


class RunLog:
    """Writer of a run directory's logs (a no-op on ranks other than 0)."""

    def __init__(self, run: Path, main: bool, cfg: Any, resume_step: int) -> None:
        self.run, self.main, self.cfg = run, main, cfg
        self.summary: dict[str, Any] = {}
        self._bar: Any = None
        self._every = 0  # plain progress lines every this many steps (0: none)
        self._total = self._first = 0
        self._t0 = 0.0
        self._metrics: Any = None
        self._eval: Any = None
        if not main:
            return
        try:
            run.mkdir(parents=True, exist_ok=True)
            _truncate_jsonl(run / "metrics.jsonl", resume_step)
            _truncate_jsonl(run / "eval.jsonl", resume_step)
            self._metrics = open(run / "metrics.jsonl", "a", encoding="utf-8")  # noqa: SIM115
            self._eval = open(run / "eval.jsonl", "a", encoding="utf-8")  # noqa: SIM115
        except OSError as e:
            raise UserError(
                f"{run}: cannot write the run's logs ({e.strerror or e}); use a writable --out"
            ) from e

    def write_config(self, config: dict[str, Any]) -> None:
        if self.main:
            write_json_atomic(self.run / "config.json", config)

    def open_progress(self, step: int, total: int) -> None:
        """A bar on a terminal; elsewhere (a log file, a pipe), or with ``progress=False``
        (``--no-progress`` / ``--quiet``), plain lines on stderr, about 20 per run, so a log
        never holds ``\\r`` frames (as ``prepare --quiet`` does)."""
        if not self.main:
            return
        self._total, self._first = total, step
        self._t0 = time.perf_counter()
        if step:
            self.note(f"resuming {self.run} at step {step:,} of {total:,}")
        if self.cfg.progress and sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=step, desc=self.cfg.method, unit="step")
        else:
            self._every = max(1, total // 20)

    def note(self, msg: str) -> None:
        """One line on stderr, above the bar when there is one."""
        if not self.main:
            return
        if self._bar is not None:
            self._bar.write(f"ddecomp train: {msg}", file=sys.stderr)
        else:
            print(f"ddecomp train: {msg}", file=sys.stderr, flush=True)

    def step(self, rec: dict[str, Any]) -> None:
        if not self.main:
            return
        self._metrics.write(json.dumps(rec) + "\n")
        self._metrics.flush()
        tail = f"loss {rec['loss']:.3f} L {rec['seq_len']} {rec['tokens_per_s']:,.0f} tok/s"
        if self._bar is not None:
            self._bar.set_postfix_str(tail, refresh=False)
            self._bar.update(1)
        elif self._every and (rec["step"] % self._every == 0 or rec["step"] == self._total):
            wall = time.perf_counter() - self._t0
            done = rec["step"] - self._first
            eta = wall / done * (self._total - rec["step"]) if done else 0.0
            print(
                f"{self.cfg.method}: step {rec['step']:,}/{self._total:,}, {tail}, "
                f"{wall:.0f} s so far, about {eta:.0f} s left",
                file=sys.stderr,
                flush=True,
            )

    def skip_eval(self, msg: str) -> None:
        """Say once, as early as it is known, that the run will not be evaluated."""
        if self.main and not self.summary.get("eval_skipped"):
            self.summary["eval_skipped"] = msg
            self.note(f"warning: {msg}")

    def eval(self, res: dict[str, Any] | None, step: int, tokens: int, elapsed: float) -> None:
        if not self.main:
            return
        if res is None:
            self.skip_eval("no held-out pieces: prepare with --val-fraction to evaluate")
            return
        rec = {"step": step, "tokens": tokens, "elapsed_s": elapsed, **res}
        self._eval.write(json.dumps(rec) + "\n")
        self._eval.flush()
        self.summary["final_eval"] = rec
        if self._bar is not None or self._every:
            self.note(f"step {step}: val loss {res['val_loss_mean']:.4f} (mean over lengths)")

    def close(self, summary: dict[str, Any]) -> None:
        if not self.main:
            self.summary = {}  # one process reports
            return
        self.summary = {**summary, **self.summary}
        if self._bar is not None:
            self._bar.close()
        self._metrics.close()
        self._eval.close()
        write_json_atomic(self.run / "summary.json", self.summary)


def load_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSON-lines log (metrics.jsonl / eval.jsonl); a killed run's partial last line is
    dropped, damage elsewhere is a one-line :class:`UserError`."""
    try:
        return [rec for _, rec in _records(path)]
    except OSError as e:
        raise UserError(f"{path}: unreadable ({e.strerror or e})") from e
