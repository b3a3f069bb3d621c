"""Statistics of a prepared split: buckets, drops, document lengths and attention cost.

:func:`compute_stats` reads one opened split (``ddecomp.open_dataset(DIR, split)``) and returns a
JSON-serialisable dict; :func:`format_stats` prints it as plain text and
:func:`ddecomp.reporting.plots.plot_stats` draws it. Everything after the two reads (bucket row
counts and document bounds) is pure numpy on arrays of document lengths, so the functions below
are tested directly. Measured (2-core machine, 2026-11-26): 15 ms for a 101M-token split of 123k
web-like documents, reading the index included; 40 ms for the document-masked C&C pass over
1.7M documents (1.4B tokens).

Mean attention context (the paper's appendix F). A sequence of ``L`` targets under causal
attention gives its ``i``-th target a context of ``i`` tokens, so it costs ``L(L+1)/2``
query-key pairs for ``L`` targets (counted by :mod:`ddecomp.attention_cost`, as the trainer's
FLOPs are). For a set of sequences::

    mean context = sum over sequences of L(L+1)/2  /  sum over sequences of L

- DD: the sequences are the bucket rows (``rows[L]`` rows of ``L`` targets each).
- Concat-and-chunk (C&C) at ``max_len``: the split's documents concatenated into one stream of
  ``N`` tokens, i.e. ``N - 1`` targets, cut into ``(N - 1) // max_len`` full chunks of ``max_len``
  targets plus one final partial chunk. For long corpora this tends to ``(max_len + 1) / 2``
  (4096.5 at 8192; the paper rounds to 4096).
- C&C with document masking: the same chunks, but a query only sees its own document, so every
  maximal run of input positions that lies in one chunk and one document is its own sequence.
  Paper, at 8192 on RefinedWeb: C&C+DM 930, DD (min 256) 1344, C&C 4096.

With ``prepare --tails pack`` the tail rows are one more bucket, ``tail`` (``{L, rows, targets,
padding, share, step_share, context}``): its query-key pairs are those of its pieces (the document
mask keeps each piece to itself), ``step_share`` is its share of the epoch's steps (every step
holds the same tokens, so it is the share of positions, padding included), and its targets join
DD's in the mean context. The drop reasons are then zero; ``dropped.padding`` counts the tail
rows' padding positions (compute spent on no target, not data lost).

The predicted attention-FLOP ratio per trained target is the ratio of mean contexts,
``DD / C&C = (sum_DD L(L+1)/2 / targets_DD) / (sum_CC L(L+1)/2 / targets_CC)``: attention
FLOPs of a sequence are proportional to its query-key pairs, and both runs are compared per
trained target (same tokens per step). Non-attention work (linear in targets) is not included.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ddecomp.attention_cost import causal_pairs, doc_mask_pairs
from ddecomp.data.dataset import Dataset
from ddecomp.decompose import bucket_lengths_for, describe_long_docs, long_docs_of
from ddecomp.errors import DataError

PERCENTILES = (10, 25, 50, 75, 90, 99)
HIST_BINS_PER_OCTAVE = 4


def dd_context(bucket_rows: Mapping[int, int]) -> tuple[int, int]:
    """``(query-key pairs, targets)`` of DD's rows: ``rows[L]`` sequences of ``L`` targets."""
    pairs = causal_pairs(list(bucket_rows), list(bucket_rows.values()))
    targets = sum(int(n) * L for L, n in bucket_rows.items())
    return pairs, targets


def cc_context(doc_lengths: np.ndarray, max_len: int, doc_mask: bool = False) -> tuple[int, int]:
    """``(query-key pairs, targets)`` of concat-and-chunk at ``max_len`` over the documents.

    The stream of ``N = sum(doc_lengths)`` tokens has ``N - 1`` targets; input position ``i``
    predicts token ``i + 1``. Chunk ``c`` holds input positions ``[c * max_len, (c+1) * max_len)``.
    With ``doc_mask`` a chunk is further cut at every document start, and each piece is a
    sequence of its own (:func:`~ddecomp.attention_cost.doc_mask_pairs`: vectorized over the
    ``#docs + N / max_len`` cut points).
    """
    lengths = np.asarray(doc_lengths, dtype=np.int64)
    targets = max(int(lengths.sum()) - 1, 0)
    if targets == 0:
        return 0, 0
    if doc_mask:
        return doc_mask_pairs(np.cumsum(lengths) - lengths, max_len, targets), targets
    full, rest = divmod(targets, max_len)
    return causal_pairs([max_len, rest], [full, 1]), targets


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def length_summary(doc_lengths: np.ndarray) -> dict[str, Any]:
    """Count, min, mean, max and :data:`PERCENTILES` (numpy's linear interpolation) of lengths."""
    lengths = np.asarray(doc_lengths, dtype=np.int64)
    out: dict[str, Any] = {"count": int(lengths.size)}
    if lengths.size == 0:
        out.update({"min": None, "mean": None, "max": None})
        out.update({f"p{p}": None for p in PERCENTILES})
        return out
    pct = np.percentile(lengths, PERCENTILES)
    out["min"] = int(lengths.min())
    out.update({f"p{p}": float(v) for p, v in zip(PERCENTILES, pct, strict=True)})
    out["max"] = int(lengths.max())
    out["mean"] = float(lengths.mean())
    return out


def length_histogram(
    doc_lengths: np.ndarray, bins_per_octave: int = HIST_BINS_PER_OCTAVE
) -> dict[str, list[Any]]:
    """Histogram of document lengths on log2-spaced edges ``2^(j / bins_per_octave)``.

    Edges run from 1 to the first power of two >= the longest document (at least 2); every
    ``bins_per_octave``-th edge is an exact power of two, so bucket boundaries are bin edges.
    ``documents`` counts documents per bin, ``tokens`` sums their lengths (the last bin includes
    its right edge, as in :func:`numpy.histogram`).
    """
    lengths = np.asarray(doc_lengths, dtype=np.int64)
    top = max(int(lengths.max()) if lengths.size else 1, 2)
    octaves = (top - 1).bit_length()  # 2^octaves >= top
    j = np.arange(octaves * bins_per_octave + 1)
    edges = np.exp2(j / bins_per_octave)
    edges[::bins_per_octave] = np.ldexp(1.0, j[::bins_per_octave] // bins_per_octave)
    docs, _ = np.histogram(lengths, bins=edges)
    toks, _ = np.histogram(lengths, bins=edges, weights=lengths.astype(np.float64))
    return {
        "edges": [float(e) for e in edges],
        "documents": [int(c) for c in docs],
        "tokens": [round(float(t)) for t in toks],
    }


_DROP_LABELS = {
    "document_shorter_than_min": "documents shorter than min",
    "tail_below_min": "tails below min",
}


def _dropped(manifest: Mapping[str, Any], split: str, num_tokens: int) -> dict[str, Any]:
    """Dropped tokens of ``split`` by reason, as ``prepare`` records them in the manifest.

    Reads ``manifest["splits"][split]["dropped"]`` (``{reason: {"tokens", ["documents"]}}``)
    and ``manifest["dropped"]["ingest"]["skipped"]`` (inputs skipped before tokenizing, by
    reason; corpus-wide, counted in inputs since they have no tokens). Shares are of the
    split's tokens.
    """
    split_rec = manifest["splits"][split]
    if int(split_rec["tokens"]) != num_tokens:
        raise DataError(
            f"manifest.json: split {split} records {split_rec['tokens']} tokens but its "
            f"documents hold {num_tokens}; run `ddecomp verify`"
        )
    reasons = []
    for key, rec in split_rec["dropped"].items():
        tokens = int(rec["tokens"])
        reasons.append(
            {
                "reason": key,
                "label": _DROP_LABELS.get(key, key.replace("_", " ")),
                "tokens": tokens,
                "documents": int(rec["documents"]) if "documents" in rec else None,
                "share": _ratio(tokens, num_tokens),
            }
        )
    total = sum(r["tokens"] for r in reasons)
    skipped = manifest["dropped"]["ingest"]["skipped"]
    # Not dropped, but not a target either: the first token of every kept document. With it,
    # kept targets + dropped + context_only_tokens = the split's tokens.
    short = split_rec["dropped"]["document_shorter_than_min"]["documents"]
    context_only = int(split_rec["documents"]) - int(short)
    return {
        "tokens": total,
        "share": _ratio(total, num_tokens),
        "reasons": reasons,
        "context_only_tokens": context_only,
        "ingest": {k: int(v) for k, v in skipped.items()},
    }


def compute_stats(ds: Dataset) -> dict[str, Any]:
    """All statistics of one opened split as a JSON-serialisable dict (see the module docstring).

    Keys: ``split``, ``root``, ``tails`` (the policy), ``tail`` (None unless ``pack``),
    ``fingerprint``, ``min_len``, ``max_len``, ``long_docs`` (what happened above ``max_len``:
    ``split``, ``spread``, or ``unknown`` if unrecorded), ``num_documents``,
    ``num_tokens``, ``kept_targets``, ``buckets`` (list of ``{L, rows, tokens, share}`` for every
    L from min to max; ``tokens = rows * L`` trained targets, ``share`` of ``kept_targets``),
    ``dropped``, ``doc_length`` (:func:`length_summary`), ``doc_length_hist``
    (:func:`length_histogram`), ``attention_context`` and ``attention_flop_ratio``.
    """
    starts, ends = ds.document_bounds()
    lengths = np.asarray(ends, dtype=np.int64) - np.asarray(starts, dtype=np.int64)
    assert lengths.size == 0 or int(lengths.min()) >= 1, "documents have at least one token"
    num_tokens = int(lengths.sum())
    rows = {L: int(ds.bucket_rows.get(L, 0)) for L in bucket_lengths_for(ds.min_len, ds.max_len)}
    tail = ds.tail_index
    if tail is not None and tail.length in rows:
        rows[tail.length] -= tail.rows  # the plain rows; the packed ones are the tail bucket
    dd_pairs, kept = dd_context(rows)
    positions = kept
    tail_stats: dict[str, Any] | None = None
    if tail is not None:
        data = tail.targets[tail.starts >= 0]
        t_targets, t_pairs = int(data.sum()), causal_pairs(data)
        positions += tail.rows * tail.length
        tail_stats = {
            "L": tail.length,
            "rows": tail.rows,
            "pieces": int(data.size),
            "targets": t_targets,
            "padding": tail.rows * tail.length - t_targets,
            "context": _ratio(t_pairs, t_targets),
        }
        dd_pairs, kept = dd_pairs + t_pairs, kept + t_targets
    recorded = int(ds.manifest["splits"][ds.split]["kept_targets"])
    if kept != recorded:
        raise DataError(
            f"{ds.root}: split {ds.split} buckets hold {kept} targets, the manifest records "
            f"{recorded}; run `ddecomp verify`"
        )
    buckets = [
        {"L": L, "rows": n, "tokens": n * L, "share": _ratio(n * L, kept)} for L, n in rows.items()
    ]
    if tail_stats is not None:
        tail_stats["share"] = _ratio(tail_stats["targets"], kept)
        tail_stats["step_share"] = _ratio(tail_stats["rows"] * tail_stats["L"], positions)
    dropped = _dropped(ds.manifest, ds.split, num_tokens)
    dropped["padding"] = 0 if tail_stats is None else tail_stats["padding"]
    if kept + dropped["tokens"] + dropped["context_only_tokens"] != num_tokens:
        raise DataError(
            f"{ds.root}: split {ds.split}: {kept} targets + {dropped['tokens']} dropped + "
            f"{dropped['context_only_tokens']} first tokens != {num_tokens} tokens; "
            "run `ddecomp verify`"
        )
    cc_pairs, cc_targets = cc_context(lengths, ds.max_len)
    dm_pairs, dm_targets = cc_context(lengths, ds.max_len, doc_mask=True)
    ctx_dd = _ratio(dd_pairs, kept)
    ctx_cc = _ratio(cc_pairs, cc_targets)
    ctx_dm = _ratio(dm_pairs, dm_targets)
    return {
        "split": ds.split,
        "root": str(ds.root),
        "fingerprint": ds.fingerprint,
        "min_len": int(ds.min_len),
        "max_len": int(ds.max_len),
        "long_docs": long_docs_of(ds.manifest),
        "num_documents": int(lengths.size),
        "num_tokens": num_tokens,
        "kept_targets": kept,
        "buckets": buckets,
        "tails": ds.tails,
        "tail": tail_stats,
        "dropped": dropped,
        "doc_length": length_summary(lengths),
        "doc_length_hist": length_histogram(lengths),
        "attention_context": {
            "max_len": int(ds.max_len),
            "dd": ctx_dd,
            "cc": ctx_cc,
            "cc_doc_mask": ctx_dm,
        },
        "attention_flop_ratio": {
            "dd_vs_cc": None if ctx_dd is None or not ctx_cc else ctx_dd / ctx_cc,
            "dd_vs_cc_doc_mask": None if ctx_dd is None or not ctx_dm else ctx_dd / ctx_dm,
        },
    }


def _num(v: float | int | None, spec: str = ",.0f", unit: str = "") -> str:
    """``v`` formatted with its unit (``%``, ``x``); a missing value is ``n/a``, unit-less."""
    return "n/a" if v is None else format(v, spec) + unit


def format_stats(stats: Mapping[str, Any]) -> str:
    """Plain-text report of a :func:`compute_stats` dict (one table per topic)."""
    n_tok = stats["num_tokens"]
    kept = stats["kept_targets"]
    lines = [
        f"dataset {stats['root']}  split {stats['split']}  fingerprint {stats['fingerprint'][:16]}",
        f"documents {stats['num_documents']:,}  tokens {n_tok:,}  trained targets {kept:,}"
        f" ({_num(_ratio(100 * kept, n_tok), '.1f', '%')} of tokens)"
        f"  lengths {stats['min_len']}..{stats['max_len']}",
        f"long documents: {describe_long_docs(stats.get('long_docs') or 'unknown')}",
        "",
        f"{'bucket L':>9} {'rows':>12} {'tokens':>15} {'share':>7}",
    ]
    for b in stats["buckets"]:
        lines.append(
            f"{b['L']:>9} {b['rows']:>12,} {b['tokens']:>15,} "
            f"{_num(_pct(b['share']), '.1f', '%'):>7}"
        )
    rows = sum(b["rows"] for b in stats["buckets"])
    t = stats.get("tail")
    if t is not None:
        rows += t["rows"]
        lines.append(
            f"{'tail ' + str(t['L']):>9} {t['rows']:>12,} {t['targets']:>15,} "
            f"{_num(_pct(t['share']), '.1f', '%'):>7}  ({t['pieces']:,} pieces, padding "
            f"{t['padding']:,} = {_num(_pct(_ratio(t['padding'], t['targets'])), '.2f', '%')} of "
            f"the tail's targets; {_num(_pct(t['step_share']), '.1f', '%')} of the steps)"
        )
    lines.append(f"{'total':>9} {rows:>12,} {kept:>15,} {'100.0%' if kept else 'n/a':>7}")
    lines += ["", f"{'dropped':<34} {'tokens':>15} {'% of tokens':>12}"]
    dropped = stats["dropped"]
    for r in dropped["reasons"]:
        lines.append(
            f"{r['label']:<34} {r['tokens']:>15,} {_num(_pct(r['share']), '.2f', '%'):>12}"
        )
    lines.append(
        f"{'total':<34} {dropped['tokens']:>15,} {_num(_pct(dropped['share']), '.2f', '%'):>12}"
    )
    if dropped.get("padding"):
        lines.append(f"{'padding in tail rows (positions)':<34} {dropped['padding']:>15,}")
    c = dropped["context_only_tokens"]
    lines.append(
        f"(not a target: first token of each kept document {c:,},"
        f" {_num(_pct(_ratio(c, n_tok)), '.2f', '%')})"
    )
    for reason, n in dropped["ingest"].items():
        if n:
            lines.append(f"skipped at ingest, whole corpus ({reason}): {n:,} inputs")
    d = stats["doc_length"]
    lines += [
        "",
        f"document length (tokens, EOS included): count {d['count']:,}  min {_num(d['min'])}"
        f"  mean {_num(d['mean'], ',.1f')}  max {_num(d['max'])}",
        "  " + "  ".join(f"p{p} {_num(d[f'p{p}'])}" for p in PERCENTILES),
    ]
    ctx = stats["attention_context"]
    ratio = stats["attention_flop_ratio"]
    m = ctx["max_len"]
    lines += [
        "",
        "mean attention context (sum of L(L+1)/2 over sequences / targets):",
    ]
    for label, v in (
        (f"DD (buckets {stats['min_len']}..{m})", ctx["dd"]),
        (f"concat-and-chunk {m}", ctx["cc"]),
        (f"concat-and-chunk {m} + doc mask", ctx["cc_doc_mask"]),
    ):
        lines.append(f"  {label:<34} {_num(v, ',.1f'):>10}")
    lines += [
        f"predicted attention FLOPs per target: DD / C&C {_num(ratio['dd_vs_cc'], '.3f', 'x')}"
        f"  (DD / C&C+doc mask {_num(ratio['dd_vs_cc_doc_mask'], '.3f', 'x')})",
    ]
    return "\n".join(lines)


def _pct(share: float | None) -> float | None:
    return None if share is None else 100.0 * share
