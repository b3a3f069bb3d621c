"""Read-only access to a prepared dataset: memory-mapped tokens, buckets of row offsets.

``open_dataset(DIR, split)`` maps every shard's token file and loads the per-bucket row offset
arrays into one global array per bucket (above 2^26 rows in a bucket, each shard's file mapped
instead: :mod:`ddecomp.data.rowstarts`). Shards live in one *global token space*: shard
``i``'s tokens start at ``token_base[i]``, so a row or a document is one int64 offset.

``rows`` finds the shard of each row with one ``searchsorted`` over the shard bases and gathers
whole rows through a sliding-window view of the shard (``sliding_window_view(tokens, L + 1)
[starts]``, cached per shard and length): numpy copies each row as one contiguous run and converts
to the output dtype (e.g. straight into an int64 torch buffer) in the same pass. Measured here on
random rows of an 80M-token array, in tokens/s: at L = 256 1.8G, against 0.4G for a fancy index
``tokens[starts[:, None] + arange]`` (which first builds an int64 index as large as the data) and
0.5G for one slice copy per row; at L = 8192 3.6G against 1.1G and 2.6G.

Tail rows (``prepare --tails pack``, :mod:`ddecomp.data.tailrows`) join the bucket of their
length ``T`` after its plain rows (``packed_from[T]`` is the first), so plans, curricula, blends
and resume see one more set of rows of length ``T`` (the shortest bucket when ``T < min_len``:
the buckets then run ``T..max_len``). Their labels are not ``row[1:]``: read them with
:meth:`Dataset.fill`, which also returns the segment starts the document mask needs;
:meth:`Dataset.rows` refuses them.

What opening trusts, and what it checks first (cheap: no token is read; ``verify`` is the full
check): the manifest's fields and file names (:func:`~ddecomp.data.layout.check_manifest`), each
file's presence, size and place inside the directory (one ``lstat`` each), the bucket files'
headers against their row counts, and every row start inside its shard (a mapped bucket's at
the read that meets it); document indexes are
checked the same way when first read. A problem is one :class:`DataError` line that names the
file and points to ``ddecomp verify DIR``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ddecomp.data.files import check_files, check_out, pointing_to_verify, read_npy
from ddecomp.data.layout import (
    MANIFEST,
    SPLITS,
    check_manifest,
    load_manifest,
)
from ddecomp.data.rowstarts import ShardedStarts, load_row_starts
from ddecomp.data.tailindex import load_tail_index
from ddecomp.data.tailrows import (
    PackedRows,
    TailIndex,
    fill_packed,
    tail_policy,
)
from ddecomp.data.tokenfile import InPlaceGuard, token_array
from ddecomp.decompose import bucket_lengths_for
from ddecomp.errors import DataError, UserError

if TYPE_CHECKING:
    from ddecomp.data.remote_tokens import RemoteTokens

# Rows spread over several shards: from this width on, per-row slice copies into ``out`` beat
# per-shard window gathers, whose results must be scattered into ``out`` through a temporary.
_ROW_COPY_WIDTH = 512


class Dataset:
    """One split of a prepared dataset. Construct with :func:`open_dataset`."""

    def __init__(
        self, root: Path, manifest: dict[str, Any], split: str, remote: RemoteTokens | None = None
    ) -> None:
        self.root = root
        self.remote = remote  # a dataset in object storage: its tokens, read on demand
        self.manifest = manifest
        self.split = split
        self.fingerprint: str = manifest["fingerprint"]
        self.min_len: int = manifest["min_len"]
        self.max_len: int = manifest["max_len"]
        tok = manifest["tokenizer"]
        self.eos_id: int = tok["eos_id"]
        self.bos_id: int | None = tok.get("bos_id")
        self.vocab_size: int = tok["vocab_size"]
        self.dtype = np.dtype(manifest["dtype"])
        shards = manifest["shards"]
        self._tokens: list[np.ndarray] = self._token_arrays()
        self._guard = InPlaceGuard(manifest)  # an --in-place file: re-checked before each read
        self.token_base = np.cumsum([0] + [int(sh["tokens"]) for sh in shards], dtype=np.int64)
        self._starts: dict[int, np.ndarray | ShardedStarts] = {}
        policy, tail_len = tail_policy(manifest)
        self.tails: str = policy
        self._tail = (
            None
            if tail_len is None
            else load_tail_index(root, shards, split, self.token_base, tail_len)
        )
        low = self.min_len if tail_len is None else min(tail_len, self.min_len)
        for L in bucket_lengths_for(low, self.max_len):
            recs = [(i, sh["buckets"][split].get(str(L))) for i, sh in enumerate(shards)]
            recs = [(i, rec) for i, rec in recs if rec is not None and rec["rows"]]
            self._starts[L] = load_row_starts(
                [root / rec["path"] for _, rec in recs],
                [int(rec["rows"]) for _, rec in recs],
                [int(self.token_base[i]) for i, _ in recs],
                [int(self.token_base[i + 1] - self.token_base[i]) for i, _ in recs],
                L,
            )
        self.bucket_rows: dict[int, int] = {L_: int(a.size) for L_, a in self._starts.items()}
        self.packed_from: dict[int, int] = {}  # bucket -> its first packed tail row
        if self._tail is not None:
            T = self._tail.length
            self.packed_from[T] = self.bucket_rows[T]
            self.bucket_rows[T] += self._tail.rows
        self.bucket_lengths: list[int] = [L_ for L_, n in self.bucket_rows.items() if n]
        # bucket lengths holding packed tail rows (--tails pack): served with a document mask
        self.packed_lengths: tuple[int, ...] = tuple(sorted(self.packed_from))
        self._doc_bounds: tuple[np.ndarray, np.ndarray] | None = None
        self._windows: dict[tuple[int, int], np.ndarray] = {}

    def _token_arrays(self) -> list[np.ndarray]:
        """Every shard's tokens, memory-mapped (a remote dataset reads them on demand instead).
        A plain ndarray view of the map: slicing a np.memmap runs Python-level
        ``__getitem__``/``__array_finalize__`` (~1.4 us per row, a quarter of an 8192-row copy)."""
        if self.remote is not None:
            return []
        return [token_array(self.root, self.manifest, sh) for sh in self.manifest["shards"]]

    @property
    def tail_index(self) -> TailIndex | None:
        """This split's packed tail rows (``--tails pack``), else None."""
        return self._tail

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # Pickled (e.g. into spawned loader workers) by path: reopening maps the same files,
        # where pickling the memmaps would copy every token. A remote one: by URL and cache.
        if self.remote is not None:
            return (_reopen, (*self.remote.reopen_args(), self.split, self.fingerprint))
        return (_reopen, (str(self.root), self.split, self.fingerprint))

    def __repr__(self) -> str:
        rows = ", ".join(f"{L}: {n}" for L, n in self.bucket_rows.items() if n)
        return f"Dataset({str(self.root)!r}, split={self.split!r}, rows={{{rows}}})"

    # ---- buckets -----------------------------------------------------------------------------
    def for_epoch(self, epoch: int) -> Dataset:
        """The rows served in ``epoch``: a prepared dataset serves the same rows every epoch (a
        :class:`~ddecomp.data.blend.Blend` rotates the rows behind its fractional factors)."""
        return self

    def for_split(self, split: str) -> Dataset:
        """The same prepared dataset's ``split`` (train | val)."""
        if split == self.split:
            return self
        if self.remote is not None:
            url, cache_dir, cache_limit = self.remote.reopen_args()
            return open_dataset(url, split, cache_dir, cache_limit)
        return open_dataset(self.root, split)

    @property
    def prefetch_steps(self) -> int:
        """Steps a loader should ask for ahead (:meth:`prefetch`): 0 for a local dataset."""
        return 0 if self.remote is None else 2

    def prefetch(self, L: int, indices: Sequence[int] | np.ndarray) -> None:
        """Start reading rows ``indices`` of bucket ``L`` (plain ones) in the background."""
        if self.remote is not None:
            idx = self._indices(L, indices)
            idx = idx[idx < self.packed_from.get(L, self.bucket_rows[L])]
            self.remote.prefetch(self._starts[L][idx], L + 1, self.token_base)

    def num_rows(self, L: int) -> int:
        if L not in self._starts:
            raise KeyError(f"no bucket of length {L}; buckets are {list(self._starts)}")
        return self.bucket_rows[L]

    def row_starts(self, L: int) -> np.ndarray | ShardedStarts:
        """Global token offsets of the rows of bucket ``L`` (read-only, ascending): an array, or
        for a bucket above :data:`~ddecomp.data.rowstarts.EAGER_ROWS` rows its shards' mapped
        files behind the same indexing (:mod:`ddecomp.data.rowstarts`)."""
        self.num_rows(L)
        return self._starts[L]

    def rows(
        self, L: int, indices: Sequence[int] | np.ndarray, out: np.ndarray | None = None
    ) -> np.ndarray:
        """Token ids of rows ``indices`` of bucket ``L`` as ``[len(indices), L + 1]``.

        ``out`` may be any preallocated writeable integer array of that shape whose dtype holds
        every id below ``vocab_size`` (:func:`check_out`); it is filled and returned (the dtype
        conversion happens during the one copy).
        """
        idx = self._indices(L, indices)
        if L in self.packed_from and idx.size and int(idx.max()) >= self.packed_from[L]:
            raise UserError(
                f"row {int(idx.max())} of bucket {L} is a packed tail row (rows from "
                f"{self.packed_from[L]} on): its labels are not row[1:]; read it with fill()"
            )
        if out is None:
            out = np.empty((idx.size, L + 1), dtype=self.dtype)
        check_out(out, (idx.size, L + 1), self.vocab_size)
        self._gather(self._starts[L][idx], L + 1, out)
        return out

    def _indices(self, L: int, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        idx = np.asarray(indices, dtype=np.int64)
        n = self.num_rows(L)
        if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= n):
            raise IndexError(f"row index out of range for bucket {L} with {n} rows")
        return idx

    def fill(
        self, L: int, indices: Sequence[int] | np.ndarray, out: np.ndarray
    ) -> PackedRows | None:
        """Rows ``indices`` of bucket ``L`` into ``out [n, L + 1]``, packed tail rows included.

        None when every row is plain (train on ``out[:, :-1]`` / ``out[:, 1:]``, as
        :meth:`rows`); else the labels of all the rows and their segment starts (a packed row
        holds its inputs in ``out[:, :-1]``, see :mod:`ddecomp.data.tailrows`).
        """
        idx = self._indices(L, indices)
        check_out(out, (idx.size, L + 1), self.vocab_size)
        first = self.packed_from.get(L)
        if first is None or idx.size == 0 or int(idx.max()) < first:
            self._gather(self._starts[L][idx], L + 1, out)
            return None
        assert self._tail is not None
        packed = idx >= first
        plain = np.flatnonzero(~packed)
        labels = np.empty((idx.size, L), dtype=np.int64)
        if plain.size:
            tmp = np.empty((plain.size, L + 1), dtype=out.dtype)
            self._gather(self._starts[L][idx[plain]], L + 1, tmp)
            out[plain] = tmp
            labels[plain] = tmp[:, 1:]
        sel = np.flatnonzero(packed)
        sub_out = np.empty((sel.size, L + 1), dtype=out.dtype)
        sub_lab = np.empty((sel.size, L), dtype=np.int64)
        segs = fill_packed(self._tail, idx[sel] - first, self.tokens, sub_out, sub_lab, self.eos_id)
        out[sel], labels[sel] = sub_out, sub_lab
        segments = [np.zeros(0, dtype=np.int64)] * idx.size
        for i, sg in zip(sel.tolist(), segs, strict=True):
            segments[i] = sg
        return PackedRows(labels, segments)

    def windows(self, starts: np.ndarray, width: int, out: np.ndarray) -> np.ndarray:
        """Tokens ``[s, s + width)`` of each global offset ``s`` in ``starts`` into ``out``
        (``[len(starts), width]``), each inside one shard: pieces of rows, for serving a dataset
        at a shorter maximum (:mod:`ddecomp.loading.rebucket`)."""
        starts = np.asarray(starts, dtype=np.int64)
        check_out(out, (starts.size, width), self.vocab_size)
        self._gather(starts, width, out)
        return out

    def _window(self, shard: int, width: int) -> np.ndarray:
        """``[n - width + 1, width]`` read-only view: row ``s`` is ``tokens[s : s + width]``."""
        key = (shard, width)
        win = self._windows.get(key)
        if win is None:
            win = self._windows[key] = sliding_window_view(self._tokens[shard], width)
        return win

    def _gather(self, starts: np.ndarray, width: int, out: np.ndarray) -> None:
        if starts.size == 0:  # a shard may be shorter than the window of an empty request
            return
        if self.remote is not None:
            self.remote.gather(starts, width, out, self.token_base)
            return
        if len(self._tokens) == 1:
            self._guard.check()
            out[...] = self._window(0, width)[starts]
            return
        shard = np.searchsorted(self.token_base, starts, side="right") - 1
        self._guard.check(shard)  # the in-place files these shards are ranges of
        local = starts - self.token_base[shard]
        if width >= _ROW_COPY_WIDTH:  # few long rows: one slice copy each, straight into out
            for i, (k, lo) in enumerate(zip(shard.tolist(), local.tolist(), strict=True)):
                out[i] = self._tokens[k][lo : lo + width]
            return
        for k in np.unique(shard).tolist():  # many short rows: one window gather per shard
            sel = np.flatnonzero(shard == k)
            out[sel] = self._window(k, width)[local[sel]]

    # ---- documents ---------------------------------------------------------------------------
    def document_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Global ``(start, end)`` token offsets of this split's documents, in order."""
        if self._doc_bounds is None:
            s_parts, e_parts = [], []
            want = 0 if self.split == "train" else 1
            for i, sh in enumerate(self.manifest["shards"]):
                with pointing_to_verify(self.root):
                    fence, split = self._document_index(i, sh)
                keep = split == want
                s_parts.append(fence[:-1][keep] + self.token_base[i])
                e_parts.append(fence[1:][keep] + self.token_base[i])
            z = np.zeros(0, dtype=np.int64)
            self._doc_bounds = (
                np.concatenate(s_parts) if s_parts else z,
                np.concatenate(e_parts) if e_parts else z,
            )
        return self._doc_bounds

    def _document_index(self, i: int, sh: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """Shard ``i``'s fenceposts and split codes, checked: O(documents), once per open."""
        docs, codes = (self.root / sh["files"][k]["path"] for k in ("docs", "split"))
        fence = read_npy(docs, "int64", sh["documents"] + 1)
        split = read_npy(codes, "uint8", sh["documents"])
        n = int(self.token_base[i + 1] - self.token_base[i])
        if fence[0] != 0 or fence[-1] != n or (fence.size > 1 and int(np.diff(fence).min()) < 1):
            raise DataError(f"{docs}: the document offsets do not rise from 0 to the {n} tokens")
        if split.size and int(split.max()) > 1:
            raise DataError(f"{codes}: a split code other than 0 (train) and 1 (val)")
        return fence, split

    @property
    def num_documents(self) -> int:
        return int(self.document_bounds()[0].size)

    @property
    def num_tokens(self) -> int:
        s, e = self.document_bounds()
        return int((e - s).sum())

    def tokens(self, start: int, end: int) -> np.ndarray:
        """Tokens ``[start, end)`` of the global token space (within one shard)."""
        s = int(np.searchsorted(self.token_base, start, side="right")) - 1
        lo, hi = start - int(self.token_base[s]), end - int(self.token_base[s])
        if not 0 <= s < self.token_base.size - 1 or lo > hi or hi > np.diff(self.token_base)[s]:
            raise IndexError(f"token range [{start}, {end}) is not inside one shard")
        self._guard.check(np.array([s]))
        if self.remote is not None:
            return self.remote.tokens(s, lo, hi)
        return self._tokens[s][lo:hi]

    def documents(self) -> Iterator[np.ndarray]:
        """This split's tokenized documents (EOS last), in order, as arrays."""
        starts, ends = self.document_bounds()
        for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
            yield np.asarray(self.tokens(a, b))


def _reopen(*args: Any) -> Dataset:
    """``(root, split, fingerprint)`` or ``(url, cache_dir, cache_limit, split, fingerprint)``."""
    *where, split, fingerprint = args
    ds = open_dataset(where[0], split, *where[1:])
    if ds.fingerprint != fingerprint:
        raise DataError(f"{where[0]}: the dataset changed on disk while it was in use")
    return ds


def open_dataset(
    root: str | Path,
    split: str = "train",
    cache_dir: str | Path | None = None,
    cache_limit: int | None = None,
) -> Dataset:
    """Open a prepared dataset read-only; refuses unknown format versions and splits, and a
    manifest or file that does not hold what the format promises (see the module docstring).

    ``root`` may be a URL (``s3://bucket/prefix``): its manifest and index files are fetched,
    sha256-checked, into ``cache_dir`` (default ``$DDECOMP_CACHE`` or ``~/.cache/ddecomp``) and
    token bytes are read on demand in checked chunks, at most ``cache_limit`` bytes of them
    cached on disk (None: no limit, 0: none) (:mod:`ddecomp.data.remote`)."""
    if split not in SPLITS:
        raise UserError(f"split {split!r} is not one of {', '.join(SPLITS)}")
    from ddecomp.data.remote import is_url, open_remote

    if is_url(root):
        local, remote_man, tokens = open_remote(root, cache_dir, cache_limit)
        return Dataset(local, remote_man, split, tokens)
    root = Path(root)
    man = load_manifest(root)
    with pointing_to_verify(root):
        check_manifest(man, root / MANIFEST)
        check_files(root, man)
        return Dataset(root, man, split)
