"""Fixed-length baselines with the VSLLoader interface: concat-and-chunk (+ document mask).

The paper's baselines (docs/method.md section 4) on the same data and state machinery as DD:

- :class:`ConcatChunkLoader` (``Baseline-8k``): the split's documents (each EOS-terminated) are
  concatenated in order into one stream of ``T`` tokens and cut into ``(T - 1) // seq_len`` rows
  of ``seq_len + 1`` tokens that overlap by one token (our convention: every target of the stream
  is in exactly one row; the last ``< seq_len`` targets are dropped and counted). The rows are
  one bucket of a :class:`~ddecomp.loading.plan.Plan`, served in the plan's order (a
  permutation seeded ``(seed, epoch, seq_len)``) and cut into rank slices as DD's steps are.
- ``doc_mask=True`` (``Baseline-8k+DM``) adds what document-masked attention needs, per batch:
  ``cu_seqlens`` (int32, flash-attn varlen layout: segment boundaries flattened over the rows,
  ``[0, ..., rows * seq_len]``; a segment is the part of one document inside one row),
  ``max_seqlen`` and ``position_ids`` (int64, position within its segment, restarting at 0 at
  each row start and document start, so always ``< seq_len``).

Labels at document boundaries: with a document mask the label of a document's last token (its
EOS, whose next token starts another document) is set to ``-100``, so a doc-masked baseline trains
on within-document targets only, the same target set as DD's decomposition. Without a mask the
stream is trained as is (cross-document targets included), as in standard concat-and-chunk. The
summary counts the masked labels.

Batches: ``input_ids`` / ``labels`` int64 ``[tokens_per_step // (seq_len * world_size), seq_len]``,
``seq_len``, ``step``, ``epoch``; state and resume as in :class:`~ddecomp.loading.vsl.VSLLoader`
(a changed dataset, seed, seq_len, tokens_per_step or doc_mask is refused). ``layout="flat"``
serves each batch as one ``[1, T]`` stream (:mod:`ddecomp.loading.flat`), for both baselines.
Reading a row is one slice copy per run of adjacent documents (the whole row when the split is
contiguous).
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import numpy as np
import torch

from ddecomp.errors import UserError
from ddecomp.loading.base import StepLoader
from ddecomp.loading.plan import Plan, build_plan, check_seed, check_tokens_per_step
from ddecomp.loading.protocols import IGNORE_INDEX, Batch, DocSegments, DocumentData
from ddecomp.loading.world import WorldSpec


def segments_to_batch(seg_starts: list[np.ndarray], seq_len: int) -> DocSegments:
    """``cu_seqlens``, ``max_seqlen`` and ``position_ids`` from each row's segment starts.

    ``seg_starts[r]``: sorted input positions in ``(0, seq_len)`` where a new segment begins in
    row ``r`` (position 0 always begins one).
    """
    rows = len(seg_starts)
    cu = [np.zeros(1, np.int64)]
    pos = np.empty((rows, seq_len), dtype=np.int64)
    ar = np.arange(seq_len, dtype=np.int64)
    longest = 0
    for r, b in enumerate(seg_starts):
        bounds = np.concatenate([b, [seq_len]]).astype(np.int64)
        cu.append(r * seq_len + bounds)
        mark = np.zeros(seq_len, np.int64)
        mark[b] = b
        pos[r] = ar - np.maximum.accumulate(mark)
        longest = max(longest, int(np.diff(np.concatenate([[0], bounds])).max()))
    return {
        "cu_seqlens": torch.from_numpy(np.concatenate(cu).astype(np.int32)),
        "max_seqlen": longest,
        "position_ids": torch.from_numpy(pos),
    }


class _FixedLengthLoader(StepLoader):
    """Epochs, ranks, workers and state for loaders of ``num_rows`` fixed-length rows.

    The order is a :class:`~ddecomp.loading.plan.Plan` of one bucket (``seq_len``, ``num_rows``
    rows, natural order, one cycle, no OOM probe): its row order is the seeded permutation
    ``(seed, epoch, seq_len)``, step ``s`` takes its ``s``-th batch and a rank its contiguous
    slice, exactly as for DD, so the plan's exactly-once proof covers the baselines too.
    """

    kind = "fixed"

    def __init__(
        self,
        ds: DocumentData,
        seq_len: int,
        tokens_per_step: int,
        seed: int,
        world: WorldSpec,
        layout: str = "rows",
    ) -> None:
        if not isinstance(seq_len, int | np.integer) or seq_len < 1:
            raise UserError(f"seq_len {seq_len!r} must be a positive integer")
        super().__init__(world, layout)
        self.ds, self.seq_len, self.seed = ds, int(seq_len), check_seed(seed)
        check_tokens_per_step(tokens_per_step, [self.seq_len], self.world.world_size)
        self.tokens_per_step = int(tokens_per_step)
        self.rows_per_batch = self.tokens_per_step // self.seq_len

    @property
    def step_lengths(self) -> tuple[int, ...]:
        return (self.seq_len,)

    # subclasses: the number of rows, and filling rows into a [n, seq_len + 1] int64 buffer
    @property
    @abstractmethod
    def num_rows(self) -> int:
        """Rows of ``seq_len + 1`` tokens this loader makes of the split."""

    @abstractmethod
    def fill(
        self, rows: np.ndarray, buf: np.ndarray
    ) -> tuple[torch.Tensor | None, DocSegments | None]:
        """Write rows ``rows`` into ``buf``; return masked labels (None: ``buf[:, 1:]``) and the
        document mask (None: causal attention across the row)."""

    def _identity(self) -> dict[str, Any]:
        return {
            "loader": self.kind,
            "dataset": self.ds.fingerprint,
            "seed": self.seed,
            "seq_len": self.seq_len,
            "tokens_per_step": self.tokens_per_step,
        }

    def _check_nonempty(self) -> None:
        if len(self) == 0:
            raise UserError(
                f"tokens_per_step {self.tokens_per_step} needs {self.rows_per_batch} rows of "
                f"{self.seq_len} but the dataset makes {self.num_rows}; lower tokens_per_step"
            )

    # ---- order ---------------------------------------------------------------------------------
    def _build_plan(self, epoch: int) -> Plan:
        return build_plan(
            {self.seq_len: self.num_rows},
            self.tokens_per_step,
            "natural",
            cycles=1,
            seed=self.seed,
            epoch=epoch,
            oom_probe=False,
        )

    def make_step(self, epoch: int, step: int, shared: bool = False) -> Batch:
        plan = self.plan_for(epoch)
        rows = self.rank_rows(plan, step)
        buf = torch.empty((rows.size, self.seq_len + 1), dtype=torch.int64)
        if shared:
            buf.share_memory_()
        labels, mask = self.fill(rows, buf.numpy())
        batch: Batch = {
            "input_ids": buf[:, :-1],
            "labels": buf[:, 1:] if labels is None else labels,
            "seq_len": self.seq_len,
            "step": step,
            "epoch": epoch,
        }
        if mask is not None:
            batch["cu_seqlens"] = mask["cu_seqlens"]
            batch["max_seqlen"] = mask["max_seqlen"]
            batch["position_ids"] = mask["position_ids"]
        return self._laid_out(batch)

    def summary(self) -> dict[str, Any]:
        S, B = len(self), self.rows_per_batch
        return {
            "loader": self.kind,
            "steps": S,
            "tokens_per_step": self.tokens_per_step,
            "seq_len": self.seq_len,
            "rows": self.num_rows,
            "rows_per_batch": B,
            "rows_left_out": self.num_rows - S * B,
            "world_size": self.world.world_size,
            "tokens_per_rank_step": self.tokens_per_step // self.world.world_size,
            "layout": self.layout,
        }


class ConcatChunkLoader(_FixedLengthLoader):
    """Concat-and-chunk at ``seq_len`` (optionally document-masked); see the module docstring.

    Options are keyword-only; ``world`` as for :class:`~ddecomp.loading.vsl.VSLLoader`.
    """

    kind = "concat"

    def __init__(
        self,
        ds: DocumentData,
        *,
        seq_len: int,
        tokens_per_step: int,
        doc_mask: bool = False,
        seed: int = 0,
        world: WorldSpec = None,
        layout: str = "rows",
    ) -> None:
        super().__init__(ds, seq_len, tokens_per_step, seed, world, layout)
        self.doc_mask = bool(doc_mask)
        starts, ends = ds.document_bounds()
        lengths = ends - starts
        self._cum = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)  # doc stream starts
        T = int(self._cum[-1])
        self._chunks = max(0, (T - 1) // self.seq_len)
        # runs of adjacent documents in one shard: one slice copy each
        base = set(np.asarray(ds.token_base).tolist())
        brk = np.ones(starts.size, dtype=bool)
        if starts.size > 1:
            brk[1:] = (starts[1:] != ends[:-1]) | np.isin(starts[1:], list(base))
        run_first = np.flatnonzero(brk)
        self._run_stream = self._cum[run_first]  # stream offset where each run begins
        self._run_global = starts[run_first]  # its global token offset
        self.tail_targets = max(0, T - 1) - self._chunks * self.seq_len
        self.documents = int(starts.size)
        self._check_nonempty()

    @property
    def num_rows(self) -> int:
        return self._chunks

    def _identity(self) -> dict[str, Any]:
        return {**super()._identity(), "doc_mask": self.doc_mask}

    def fill(
        self, rows: np.ndarray, buf: np.ndarray
    ) -> tuple[torch.Tensor | None, DocSegments | None]:
        L, width = self.seq_len, self.seq_len + 1
        rs, rg = self._run_stream, self._run_global
        for i, p in enumerate((rows * L).tolist()):
            k = int(np.searchsorted(rs, p, side="right")) - 1
            at = 0
            while at < width:
                run_end = int(rs[k + 1]) if k + 1 < rs.size else int(self._cum[-1])
                take = min(width - at, run_end - (p + at))
                g = int(rg[k]) + (p + at - int(rs[k]))
                buf[i, at : at + take] = self.ds.tokens(g, g + take)
                at += take
                k += 1
        if not self.doc_mask:
            return None, None
        labels = torch.from_numpy(buf[:, 1:].copy())
        seg: list[np.ndarray] = []
        for i, p in enumerate((rows * L).tolist()):
            lo = int(np.searchsorted(self._cum, p, side="right"))
            hi = int(np.searchsorted(self._cum, p + L, side="right"))
            cross = self._cum[lo:hi] - p  # doc starts in (p, p + L]: their previous label crosses
            labels[i, torch.from_numpy(cross - 1)] = IGNORE_INDEX
            seg.append(cross[cross < L])
        return labels, segments_to_batch(seg, L)

    def summary(self) -> dict[str, Any]:
        s = super().summary()
        cross = int(np.count_nonzero(self._cum[1:-1] <= self._chunks * self.seq_len))
        s.update(
            doc_mask=self.doc_mask,
            documents=self.documents,
            tail_targets_dropped=self.tail_targets,
            cross_document_labels=cross,
            cross_document_labels_masked=cross if self.doc_mask else 0,
        )
        return s
