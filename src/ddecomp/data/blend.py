"""``Blend``: several prepared datasets served as one, each source at its own repetition factor.

Sources are prepared separately (one ``ddecomp prepare`` each, with the same tokenizer) and
blended at load time, so changing the mix never means preparing again. A blend is a dataset for
:class:`~ddecomp.loading.vsl.VSLLoader`: bucket ``L`` of the blend is the union of the sources'
buckets ``L``, so every step still holds one length and no sequence mixes two documents, and
each source keeps its own length distribution.

Weights are repetition factors, in epochs of the source per epoch of the blend. A factor
``f = k + r`` (``k`` whole, ``0 <= r < 1``) puts every row of the source's bucket ``L`` in the
blend's epoch ``k`` times, plus ``m = round(r * n_L)`` more rows: the ``e``-th window of ``m``
rows of a fixed seeded permutation of the bucket, taken cyclically. Over consecutive epochs the
windows tile the permutation, so a sub-sampled source shows every row before it shows any row
again: after ``E`` epochs each row was served ``k * E`` plus ``floor`` or ``ceil`` of
``E * m / n_L`` times. The blend's bucket sizes are the same every epoch, so the loader's plan,
resume and elastic world-size guarantees carry over unchanged; only the rows behind the
fractional part rotate.

:meth:`Blend.from_shares` turns token shares into factors, scaled so the source that limits the
mix is used exactly once and nothing is repeated. Rounding per bucket moves a source's realised
factor by at most half a row per bucket; :meth:`Blend.summary` reports realised tokens and shares.

The fixed-length baselines consume whole documents, so for them a blend is document-level
(:meth:`Blend.document_bounds`): every document ``k`` times plus a seeded subset of
``round(r * documents)``, in a token space that puts the sources one after another.

The blend's fingerprint covers the sources' fingerprints, the factors and the seed, so a loader
state from another blend is refused on resume.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ddecomp.data.dataset import Dataset, check_out, open_dataset
from ddecomp.data.tailrows import PackedRows
from ddecomp.decompose import bucket_lengths_for
from ddecomp.errors import UserError
from ddecomp.permutation import Permutation, permutation

BLEND_VERSION = 2  # 2: fractional windows in the O(1)-memory order (loading/permutation.py)
_PERMUTATION_STREAM = 0x62_6C_65_6E_64  # "blend": keeps these rngs apart from the plan's
_TOKENIZER_KEYS = ("vocab_size", "eos_id", "bos_id", "sha256")

SourceSpec = Mapping[str | Path, float] | Sequence[tuple[Dataset | str | Path, float]]


def _as_pairs(sources: SourceSpec, split: str) -> list[tuple[Dataset, float]]:
    items = list(sources.items()) if isinstance(sources, Mapping) else list(sources)
    pairs = []
    for src, w in items:
        if not isinstance(src, Dataset | str | Path):
            raise UserError(
                f"a blend source is a prepared dataset or its directory, not {type(src).__name__}"
            )
        ds = src if isinstance(src, Dataset) else open_dataset(src, split)
        pairs.append((ds, float(w)))
    return pairs


class Blend:
    """Several datasets as one (see the module docstring).

    ``sources``: ``{dir: factor}`` or ``[(dataset_or_dir, factor), ...]``; factors are epochs of
    the source per epoch of the blend (``>= 0``, at least one ``> 0``). ``seed`` picks the rows
    behind fractional factors. Every source needs the same tokenizer and decomposition
    convention; their length ranges may differ (the blend spans their union).
    """

    def __init__(self, sources: SourceSpec, seed: int = 0, split: str = "train") -> None:
        pairs = _as_pairs(sources, split)
        if not pairs:
            raise UserError("a blend needs at least one source")
        for ds, w in pairs:
            if not np.isfinite(w) or w < 0:
                raise UserError(f"{ds.root}: factor {w} must be a finite number >= 0")
        if not any(w > 0 for _, w in pairs):
            raise UserError("every blend factor is 0; give at least one source a factor > 0")
        self._check_compatible([ds for ds, _ in pairs])
        self.sources = pairs
        self.datasets = [ds for ds, _ in pairs]
        self.factors = [w for _, w in pairs]
        self.seed, self.split = int(seed), split
        first = self.datasets[0]
        self.eos_id, self.bos_id, self.vocab_size = first.eos_id, first.bos_id, first.vocab_size
        self.min_len = min(min(ds.bucket_rows) for ds in self.datasets)  # tail rows may be shorter
        self.max_len = max(ds.max_len for ds in self.datasets)
        self.dtype = np.result_type(*(ds.dtype for ds in self.datasets))
        # per bucket: rows each source puts in the blend (whole copies, then the window)
        self._parts: dict[int, list[tuple[int, int]]] = {}
        self._offsets: dict[int, np.ndarray] = {}
        for L in bucket_lengths_for(self.min_len, self.max_len):
            parts = []
            for ds, f in self.sources:
                n = ds.bucket_rows.get(L, 0)
                whole = int(np.floor(f))
                parts.append((whole * n, round((f - whole) * n)))
            self._parts[L] = parts
            self._offsets[L] = np.cumsum([0] + [a + b for a, b in parts], dtype=np.int64)
        self.bucket_rows = {L_: int(o[-1]) for L_, o in self._offsets.items()}
        self.bucket_lengths = [L_ for L_, n in self.bucket_rows.items() if n]
        self.packed_lengths = tuple(sorted({L for ds in self.datasets for L in ds.packed_lengths}))
        self.fingerprint = self._fingerprint()
        # the baselines' token space: source after source; token_base marks every shard start
        sizes = [int(ds.token_base[-1]) for ds in self.datasets]
        self._source_base = np.cumsum([0, *sizes], dtype=np.int64)
        shard_starts = [
            b + ds.token_base for b, ds in zip(self._source_base[:-1], self.datasets, strict=True)
        ]
        self.token_base = np.unique(np.concatenate(shard_starts))
        self._docs: tuple[np.ndarray, np.ndarray] | None = None
        # the last source_rows answer: a step's fill and its `source` key ask the same question
        self._last: tuple[tuple[int, int, bytes], tuple[np.ndarray, np.ndarray]] | None = None

    @classmethod
    def from_shares(cls, sources: SourceSpec, seed: int = 0, split: str = "train") -> Blend:
        """Factors such that each source's share of the blend's training tokens is its weight
        over the weights' sum, scaled so the most limiting source is used exactly once (no row
        of any source repeats within an epoch)."""
        pairs = _as_pairs(sources, split)
        total = sum(w for _, w in pairs)
        if not pairs or not np.isfinite(total) or total <= 0 or min(w for _, w in pairs) < 0:
            raise UserError("shares must be finite numbers >= 0 with a positive sum")
        for ds, w in pairs:
            if w > 0 and _targets(ds) == 0:
                raise UserError(f"{ds.root}: share {w} asked of a source with no training rows")
        # factor_s = c * share_s / tokens_s; c makes the largest factor exactly 1
        raw = [w / total / _targets(ds) if w > 0 else 0.0 for ds, w in pairs]
        top = max(raw)
        return cls([(ds, r / top) for (ds, _), r in zip(pairs, raw, strict=True)], seed, split)

    @staticmethod
    def _check_compatible(datasets: list[Dataset]) -> None:
        ref = datasets[0]
        for ds in datasets[1:]:
            for key in _TOKENIZER_KEYS:
                a, b = ref.manifest["tokenizer"].get(key), ds.manifest["tokenizer"].get(key)
                if key == "sha256" and (a is None or b is None):
                    continue  # pre-tokenized input records no tokenizer file
                if a != b:
                    raise UserError(
                        f"{ds.root}: tokenizer {key} is {b!r}, but {a!r} in {ref.root}; "
                        "prepare every source of a blend with the same tokenizer"
                    )
            if ds.manifest["convention"] != ref.manifest["convention"]:
                raise UserError(
                    f"{ds.root}: decomposition convention differs from {ref.root}'s; prepare "
                    "both with the same ddecomp version"
                )

    def _fingerprint(self) -> str:
        spec = {
            "blend": BLEND_VERSION,
            "seed": self.seed,
            "split": self.split,
            "sources": [[ds.fingerprint, f] for ds, f in self.sources],
        }
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()

    def __repr__(self) -> str:
        srcs = ", ".join(f"{ds.root}: {f:g}" for ds, f in self.sources)
        return f"Blend({{{srcs}}}, seed={self.seed})"

    def for_split(self, split: str) -> Blend:
        """The same sources' ``split`` at the same factors and seed (held-out data, same mix)."""
        if split == self.split:
            return self
        return Blend([(ds.for_split(split), f) for ds, f in self.sources], self.seed, split)

    # ---- rows ----------------------------------------------------------------------------------
    def num_rows(self, L: int) -> int:
        if L not in self.bucket_rows:
            raise KeyError(f"no bucket of length {L}; buckets are {list(self.bucket_rows)}")
        return self.bucket_rows[L]

    def served_rows(self, L: int) -> list[int]:
        """Rows each source puts in bucket ``L`` per blend epoch (whole copies + window)."""
        return [a + b for a, b in self._parts[L]]

    def _permutation(self, s: int, L: int) -> Permutation:
        """Source ``s``'s bucket ``L`` in a fixed seeded order, computed per position in O(1)
        memory (:mod:`ddecomp.permutation`)."""
        n = self.datasets[s].bucket_rows.get(L, 0)
        return permutation(n, self.seed, _PERMUTATION_STREAM, s, L)

    def source_rows(self, L: int, indices: np.ndarray, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """``(source, row)`` behind each blend row ``indices`` of bucket ``L`` in ``epoch``."""
        idx = np.asarray(indices, dtype=np.int64)
        key = (int(L), int(epoch), idx.tobytes())
        if self._last is not None and self._last[0] == key:
            return self._last[1]
        n_blend = self.num_rows(L)
        if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= n_blend):
            raise IndexError(f"row index out of range for bucket {L} with {n_blend} rows")
        src = np.searchsorted(self._offsets[L], idx, side="right") - 1
        row = idx - self._offsets[L][src]
        for s in np.unique(src).tolist():
            sel = src == s
            n = self.datasets[s].bucket_rows[L]
            whole, m = self._parts[L][s]
            j = row[sel]
            extra = j >= whole
            j[~extra] %= max(n, 1)
            j[extra] = self._permutation(s, L)((epoch * m + j[extra] - whole) % n)
            row[sel] = j
        self._last = (key, (src, row))
        return src, row

    def for_epoch(self, epoch: int) -> _EpochBlend:
        """The blend's rows as served in ``epoch`` (the loader calls this once per step).

        The only way to a blend's rows: they depend on the epoch (the rows behind a fractional
        factor rotate), so a blend has no epoch-less ``rows`` that would silently serve epoch 0.
        """
        return _EpochBlend(self, int(epoch))

    # ---- documents (the fixed-length baselines) -----------------------------------------------
    def document_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """``(start, end)`` of the documents a baseline trains on, in the blend's token space.

        Document-level, as concat-and-chunk and packing consume whole documents: every document
        of a source ``k`` times, then ``round(r * documents)`` of them chosen once by the seed (in
        document order). Fixed across epochs, unlike DD's rotating row windows; the two agree in
        expectation, and the baselines' tokens per source are in :meth:`document_summary`.
        """
        if self._docs is None:
            starts, ends = [], []
            for s, (ds, f) in enumerate(self.sources):
                a, b = ds.document_bounds()
                whole = int(np.floor(f))
                m = round((f - whole) * a.size)
                rng = np.random.default_rng([self.seed, _PERMUTATION_STREAM, s, 0])
                pick = np.concatenate(
                    [np.tile(np.arange(a.size), whole), np.sort(rng.permutation(a.size)[:m])]
                )
                starts.append(a[pick] + self._source_base[s])
                ends.append(b[pick] + self._source_base[s])
            self._docs = (np.concatenate(starts), np.concatenate(ends))
        return self._docs

    def tokens(self, start: int, end: int) -> np.ndarray:
        """Tokens ``[start, end)`` of the blend's token space (within one source's shard)."""
        s = int(np.searchsorted(self._source_base, start, side="right")) - 1
        if not 0 <= s < len(self.datasets):
            raise IndexError(f"token range [{start}, {end}) is outside the blend")
        b = int(self._source_base[s])
        return self.datasets[s].tokens(start - b, end - b)

    def document_summary(self) -> list[dict[str, Any]]:
        """Per source: documents and tokens the baselines' blend holds."""
        starts, ends = self.document_bounds()
        src = np.searchsorted(self._source_base, starts, side="right") - 1
        n = len(self.datasets)
        docs = np.bincount(src, minlength=n)
        toks = np.bincount(src, weights=ends - starts, minlength=n)
        return [
            {"source": str(ds.root), "documents": int(d), "tokens": int(k)}
            for ds, d, k in zip(self.datasets, docs, toks, strict=True)
        ]

    # ---- report --------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """Per source: factor asked, training targets per blend epoch, realised factor and share."""
        served = [
            sum(sum(self._parts[L][s]) * L for L in self._parts) for s in range(len(self.sources))
        ]
        total = sum(served)
        per = [
            {
                "source": str(ds.root),
                "fingerprint": ds.fingerprint,
                "factor": f,
                "targets": _targets(ds),
                "served_targets": n,
                "realised_factor": n / _targets(ds) if _targets(ds) else None,
                "share": n / total if total else None,
            }
            for (ds, f), n in zip(self.sources, served, strict=True)
        ]
        return {
            "fingerprint": self.fingerprint,
            "seed": self.seed,
            "served_targets": total,
            "sources": per,
        }


class _EpochBlend:
    """One epoch of a :class:`Blend`: what :meth:`rows` serves depends on the epoch."""

    def __init__(self, blend: Blend, epoch: int) -> None:
        self.blend, self.epoch = blend, epoch

    def rows(
        self, L: int, indices: Sequence[int] | np.ndarray, out: np.ndarray | None = None
    ) -> np.ndarray:
        """Token ids of blend rows ``indices`` of bucket ``L`` as ``[len(indices), L + 1]``."""
        src, row = self.blend.source_rows(L, np.asarray(indices, dtype=np.int64), self.epoch)
        if out is None:
            out = np.empty((src.size, L + 1), dtype=self.blend.dtype)
        check_out(out, (src.size, L + 1), self.blend.vocab_size)
        if len(self.blend.datasets) == 1 or np.all(src == src[:1]):
            if src.size:  # one source: gather straight into out
                self.blend.datasets[int(src[0])].rows(L, row, out=out)
            return out
        for s in np.unique(src).tolist():
            sel = np.flatnonzero(src == s)
            out[sel] = self.blend.datasets[s].rows(L, row[sel])
        return out

    def fill(
        self, L: int, indices: Sequence[int] | np.ndarray, out: np.ndarray
    ) -> PackedRows | None:
        """As :meth:`~ddecomp.data.dataset.Dataset.fill`: every source fills its rows."""
        src, row = self.blend.source_rows(L, np.asarray(indices, dtype=np.int64), self.epoch)
        check_out(out, (src.size, L + 1), self.blend.vocab_size)
        sources = np.unique(src).tolist()
        if len(sources) == 1:  # one source: its rows straight into out, no staging copy
            return self.blend.datasets[sources[0]].fill(L, row, out)
        parts: list[tuple[np.ndarray, PackedRows | None, np.ndarray]] = []
        for s in sources:
            sel = np.flatnonzero(src == s)
            tmp = np.empty((sel.size, L + 1), dtype=out.dtype)
            parts.append((sel, self.blend.datasets[s].fill(L, row[sel], tmp), tmp))
            out[sel] = tmp
        if all(p is None for _, p, _ in parts):
            return None
        labels = np.empty((src.size, L), dtype=np.int64)
        segments = [np.zeros(0, dtype=np.int64)] * src.size
        for sel, p, tmp in parts:
            labels[sel] = tmp[:, 1:] if p is None else p.labels
            for j, i in enumerate(sel.tolist()):
                segments[i] = segments[i] if p is None else p.segments[j]
        return PackedRows(labels, segments)


def _targets(ds: Dataset) -> int:
    """Training targets in the dataset's buckets (rows x length)."""
    return sum(n * L for L, n in ds.bucket_rows.items())


def check_weights(
    n_dirs: int, factors: Sequence[float] | None, shares: Sequence[float] | None
) -> None:
    """Blend weights are factors or shares, not both, and one per dataset directory."""
    if factors is not None and shares is not None:
        raise UserError("blend weights are factors or shares, not both; give one of them")
    for name, w in (("factors", factors), ("shares", shares)):
        if w is not None and len(w) != n_dirs:
            raise UserError(
                f"{len(w)} blend {name} for {n_dirs} datasets; give one per dataset, in order"
            )


def open_sources(
    dirs: Sequence[str | Path],
    factors: Sequence[float] | None = None,
    shares: Sequence[float] | None = None,
    seed: int = 0,
    split: str = "train",
) -> Dataset | Blend:
    """One prepared dataset as it is, or several as a :class:`Blend` by repetition ``factors``
    or token ``shares`` (one per directory; neither given: every factor 1)."""
    check_weights(len(dirs), factors, shares)
    weights = factors if factors is not None else shares
    if len(dirs) == 1 and weights is None:
        return open_dataset(dirs[0], split)
    ws = [1.0] * len(dirs) if weights is None else [float(w) for w in weights]
    pairs: list[tuple[Dataset | str | Path, float]] = list(zip(dirs, ws, strict=True))
    if shares is not None:
        return Blend.from_shares(pairs, seed, split)
    return Blend(pairs, seed, split)


def format_blend(s: Mapping[str, Any]) -> str:
    """A plain-text table of :meth:`Blend.summary` for the CLI."""
    lines = [
        f"blend of {len(s['sources'])} dataset{'s' * (len(s['sources']) != 1)} (seed {s['seed']}):",
        f"{'factor':>8} {'realised':>9} {'targets/epoch':>14} {'share':>7}  source",
    ]
    for p in s["sources"]:
        real = "-" if p["realised_factor"] is None else f"{p['realised_factor']:.4f}"
        lines.append(
            f"{p['factor']:>8.4g} {real:>9} {p['served_targets']:>14,} "
            f"{100 * (p['share'] or 0):>6.2f}%  {p['source']}"
        )
    return "\n".join(lines)


def describe_data(ds: Dataset | Blend) -> dict[str, Any]:
    """What a run's ``config.json`` records of its data: fingerprint, and root or blend."""
    if isinstance(ds, Blend):
        return {"fingerprint": ds.fingerprint, "blend": ds.summary()}
    return {"root": str(ds.root), "fingerprint": ds.fingerprint}
