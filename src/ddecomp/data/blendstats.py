"""``ddecomp stats DIR DIR ...``: a blend's per-source bucket shares, before any training.

For every source of a :class:`~ddecomp.data.blend.Blend` and every bucket length ``L``: the
targets the source puts in bucket ``L`` per blend epoch (its rows there, times its factor, times
``L``), that as a share of the source's own served targets (its length profile: one source mostly
short, another mostly long) and as a share of the blend's bucket ``L`` (who the steps of that
length train on). A DD step draws one bucket, so these shares say which sources the curriculum's
short and long phases see. Source names are the datasets' directory names (full paths when two
share one), as in the trainer's per-source metrics (:mod:`ddecomp.training.sources`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ddecomp.data.blend import Blend


def source_names(blend: Blend) -> list[str]:
    """The sources' names: directory names, full paths when two collide, indexed if still so."""
    roots = [Path(ds.root) for ds in blend.datasets]
    names = [r.name or str(r) for r in roots]
    if len(set(names)) < len(names):
        names = [str(r) for r in roots]
    if len(set(names)) < len(names):  # one directory given twice
        names = [f"{i}:{n}" for i, n in enumerate(names)]
    return names


def blend_stats(blend: Blend) -> dict[str, Any]:
    """``{"blend": summary, "names": [...], "buckets": [{L, targets: [...], share_of_source:
    [...], share_of_bucket: [...]}]}`` per blend epoch (JSON-serialisable)."""
    names = source_names(blend)
    per_l = {L: [n * L for n in blend.served_rows(L)] for L in blend.bucket_rows}
    per_source = [sum(t[s] for t in per_l.values()) for s in range(len(names))]
    buckets = []
    for L, t in per_l.items():
        total = sum(t)
        buckets.append(
            {
                "L": L,
                "targets": t,
                "share_of_source": [
                    x / n if n else None for x, n in zip(t, per_source, strict=True)
                ],
                "share_of_bucket": [x / total if total else None for x in t],
            }
        )
    return {"blend": blend.summary(), "names": names, "split": blend.split, "buckets": buckets}


def format_blend_stats(s: dict[str, Any]) -> str:
    """Plain text: one line per bucket, per source its targets, % of the source, % of the bucket."""
    from ddecomp.data.blend import format_blend

    names = s["names"]
    width = max(24, *(len(n) + 2 for n in names))
    head = f"{'bucket L':>9} " + " ".join(f"{n:>{width}}" for n in names)
    lines = [
        format_blend(s["blend"]),
        "",
        f"per source and bucket ({s['split']}, per blend epoch): targets (% of the source's, "
        "% of the bucket's)",
        head,
    ]

    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{100 * v:.1f}%"

    for b in s["buckets"]:
        cells = [
            f"{t:,} ({pct(a)}, {pct(c)})"
            for t, a, c in zip(
                b["targets"], b["share_of_source"], b["share_of_bucket"], strict=True
            )
        ]
        lines.append(f"{b['L']:>9} " + " ".join(f"{c:>{width}}" for c in cells))
    return "\n".join(lines)
