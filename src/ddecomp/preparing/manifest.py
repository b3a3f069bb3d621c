"""Assemble ``manifest.json`` from the shard records: totals, drops by reason, fingerprint.

Every token of the input is accounted for per split: ``tokens = documents + targets``;
``targets = kept_targets + tail + (short-document tokens - short documents)``, and the buckets'
tokens (rows x L), plus with ``--tails pack`` the tail bucket's data targets, add up to
``kept_targets`` exactly (asserted here, checked again by ``verify``). With ``pack`` the two drop
reasons are zero and each split's ``tail_bucket`` records rows, pieces, targets and padding.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ddecomp.data.layout import (
    FORMAT_NAME,
    FORMAT_VERSION,
    SPLITS,
    TAILS_FORMAT_VERSION,
    fingerprint,
    format_version,
)
from ddecomp.decompose import CONVENTION
from ddecomp.io import canonical_sha256
from ddecomp.version import __version__


def _sum_split(records: list[dict[str, Any]], split: str, tail_len: int | None) -> dict[str, Any]:
    keys = (
        "documents",
        "tokens",
        "short_documents",
        "short_document_tokens",
        "tail_tokens",
        "kept_targets",
    )
    tot = {k: sum(r["splits"][split][k] for r in records) for k in keys}
    tail = {
        k: sum(r["splits"][split].get(f"tail_{k}", 0) for r in records)
        for k in ("rows", "pieces", "targets", "padding")
    }
    buckets: dict[str, dict[str, int]] = {}
    for r in records:
        for L, b in r["buckets"][split].items():
            e = buckets.setdefault(L, {"rows": 0, "tokens": 0})
            e["rows"] += b["rows"]
            e["tokens"] += b["rows"] * int(L)
    out = {
        "documents": tot["documents"],
        "tokens": tot["tokens"],
        "targets": tot["tokens"] - tot["documents"],
        "kept_targets": tot["kept_targets"],
        "buckets": {L: buckets[L] for L in sorted(buckets, key=int)},
        "dropped": {
            "document_shorter_than_min": {
                "documents": tot["short_documents"],
                "tokens": tot["short_document_tokens"],
            },
            "tail_below_min": {"tokens": tot["tail_tokens"]},
        },
    }
    if tail_len is not None:
        out["tail_bucket"] = {"length": tail_len, **tail}
    return out


def build_manifest(
    cfg: Any,
    records: list[dict[str, Any]],
    tokenizer: dict[str, Any],
    dtype: str,
    inputs: dict[str, Any],
    ingest: dict[str, Any],
    identity: dict[str, Any],
    elapsed: float,
) -> dict[str, Any]:
    pack = cfg.tails == "pack"
    tail_len = cfg.index_params().tail_length if pack else None
    splits = {s: _sum_split(records, s, tail_len) for s in SPLITS}
    for s, tot in splits.items():
        in_tails = tot["tail_bucket"]["targets"] if pack else 0
        in_rows = sum(b["tokens"] for b in tot["buckets"].values())
        assert in_rows + in_tails == tot["kept_targets"], s
    man: dict[str, Any] = {
        "format": FORMAT_NAME,
        "version": TAILS_FORMAT_VERSION if pack else FORMAT_VERSION,
        "convention": CONVENTION,
        "tokenizer": tokenizer,
        "dtype": dtype,
        "min_len": cfg.min_len,
        "max_len": cfg.max_len,
        "long_docs": cfg.long_docs,
        "tails": {"policy": "pack", "length": tail_len} if pack else {"policy": "drop"},
        "seed": cfg.seed,
        "val_fraction": cfg.val_fraction,
        "inputs": inputs,
        "dropped": {"ingest": ingest},
        "splits": splits,
        "totals": {
            "shards": len(records),
            "documents": sum(t["documents"] for t in splits.values()),
            "tokens": sum(t["tokens"] for t in splits.values()),
            "kept_targets": sum(t["kept_targets"] for t in splits.values()),
        },
        "shards": [
            {
                k: r[k]
                for k in ("index", "name", "documents", "tokens", "files", "buckets", "tails")
                if k in r
            }
            for r in records
        ],
        "created_by": f"ddecomp {__version__}",
        "prepare": {"identity_sha256": canonical_sha256(identity), "elapsed_s": round(elapsed, 3)},
    }
    man["fingerprint"] = fingerprint(man)
    return man


def add_inputs(
    man: dict[str, Any],
    refs: Sequence[Mapping[str, Any]] = (),
    sources: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``man`` with what the shard records do not hold: the files indexed in place (one:
    ``tokens_file`` as always; several: ``tokens_files``, format version 3) and the per-input
    ``sources``; its version and fingerprint then recomputed. Every entry point ends here."""
    if len(refs) == 1:
        man["tokens_file"] = dict(refs[0])
    elif refs:
        man["tokens_files"] = [dict(r) for r in refs]
    if sources is not None:
        man["sources"] = sources
    man["version"] = format_version(man, man["tails"]["policy"] == "pack")
    man["fingerprint"] = fingerprint(man)
    return man
