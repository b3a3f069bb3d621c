"""``--tails drop`` vs ``--tails pack``: share of targets trained, tail bucket size and cost.

Input: a prepared dataset (``ddecomp prepare --out DIR``, e.g. the default corpus) whose tokens
are re-prepared with ``prepare_tokens`` as two corpora: its own documents, and the same tokens
re-cut web-like (log-normal documents of mean ~600 tokens, sigma 1: ``corpus.py``'s
``lognormal_lengths`` and ``recut``). For each corpus, ``--min-len`` 256 and 64 (max 8192) and
both policies it reports: targets trained (share of all targets), what is dropped, the tail
rows (rows, targets, padding share of the tail's targets), their share of the epoch's steps
(every step holds the same tokens, so the share of positions), the epoch's positions relative
to ``drop`` (linear cost per epoch) and DD's mean attention context (attention cost per target).

    PYTHONPATH=src python benchmarks/bench_tails.py DIR [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from benchlib import hardware
from corpus import lognormal_lengths, recut

from ddecomp import open_dataset
from ddecomp.data.stats import compute_stats
from ddecomp.preparing.pipeline import TokensConfig, prepare_tokens


def corpus_tokens(root: Path) -> tuple[np.ndarray, int]:
    """Every token of a prepared dataset (all splits, shard order) and its EOS id."""
    ds = open_dataset(root)
    base = ds.token_base.tolist()
    parts = [np.asarray(ds.tokens(a, b)) for a, b in itertools.pairwise(base)]
    return np.concatenate(parts), ds.eos_id


def measure(tokens: np.ndarray, eos: int, min_len: int, tails: str, tmp: Path) -> dict[str, Any]:
    out = tmp / f"{min_len}-{tails}"
    t0 = time.perf_counter()
    prepare_tokens(TokensConfig(tokens=tokens, out=out, eos_id=eos, min_len=min_len,
                                max_len=8192, tails=tails, workers=1))  # fmt: skip
    elapsed = time.perf_counter() - t0
    st = compute_stats(open_dataset(out))
    targets = st["num_tokens"] - st["num_documents"]
    tail = st["tail"]
    positions = sum(b["tokens"] for b in st["buckets"]) + (tail["rows"] * tail["L"] if tail else 0)
    row: dict[str, Any] = {
        "min_len": min_len, "tails": tails, "documents": st["num_documents"],
        "tokens": st["num_tokens"], "targets": targets, "trained": st["kept_targets"],
        "trained_share": st["kept_targets"] / targets,
        "dropped": {r["reason"]: r["tokens"] for r in st["dropped"]["reasons"]},
        "positions": positions, "dd_context": st["attention_context"]["dd"],
        "prepare_s": round(elapsed, 2),
    }  # fmt: skip
    if tail:
        row["tail"] = {k: tail[k] for k in ("L", "rows", "pieces", "targets", "padding")}
        row["tail"]["padding_share"] = tail["padding"] / tail["targets"]
        row["tail"]["step_share"] = tail["step_share"]
        row["tail"]["context"] = tail["context"]
    shutil.rmtree(out)
    return row


def to_markdown(res: dict[str, Any]) -> str:
    lines = [
        f"# `--tails drop` vs `pack` ({res['date']}, {res['hardware']['cpu']}, "
        f"{res['hardware']['cores']} cores, no GPU)",
        "",
        f"Source: {res['source']}. Max 8192. `positions` = the epoch's row positions "
        "(linear cost); `context` = DD's mean attention context (attention cost per target).",
        "",
        "| corpus | min | tails | targets trained | dropped | tail rows | tail padding | "
        "tail share of steps | epoch positions vs drop | context |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in res["corpora"]:
        base = {r["min_len"]: r["positions"] for r in c["rows"] if r["tails"] == "drop"}
        for r in c["rows"]:
            t = r.get("tail")
            lines.append(
                f"| {c['name']} (mean {c['mean_doc']:.0f}, median {c['median_doc']:.0f}) | "
                f"{r['min_len']} | {r['tails']} | {r['trained']:,} / {r['targets']:,} "
                f"({100 * r['trained_share']:.2f}%) | {r['targets'] - r['trained']:,} | "
                + (f"{t['rows']:,} x {t['L']} ({t['targets']:,} targets) | "
                   f"{t['padding']:,} ({100 * t['padding_share']:.2f}%) | "
                   f"{100 * t['step_share']:.2f}% | " if t else "- | - | - | ")
                + f"{r['positions'] / base[r['min_len']]:.4f} | {r['dd_context']:,.0f} |"
            )  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dataset", type=Path)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args()
    tokens, eos = corpus_tokens(args.dataset)
    n_content = int((tokens != eos).sum())
    web = recut(tokens, eos, lognormal_lengths(n_content, 599.0, 1.0, 0))
    res: dict[str, Any] = {
        "date": datetime.date.today().isoformat(), "hardware": hardware(),
        "source": f"{args.dataset} ({tokens.size:,} tokens)", "corpora": [],
    }  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        for name, toks in (("default", tokens), ("web-like re-cut", web)):
            ends = np.flatnonzero(toks == eos) + 1
            lengths = np.diff(ends, prepend=0)
            c: dict[str, Any] = {"name": name, "mean_doc": float(lengths.mean()),
                                 "median_doc": float(np.median(lengths)), "rows": []}  # fmt: skip
            for min_len in (256, 64):
                for tails in ("drop", "pack"):
                    c["rows"].append(measure(toks, eos, min_len, tails, Path(tmp)))
                    print(json.dumps(c["rows"][-1]))
            res["corpora"].append(c)
    stem = f"tails_cpu-{res['hardware']['cores']}core_{res['date']}"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(json.dumps(res, indent=1))
    md = to_markdown(res)
    (args.out / f"{stem}.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
