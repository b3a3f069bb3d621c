"""Render ``compare_olmo_*.json`` (from ``compare_olmo.py``) as a Markdown report and a figure.

    python benchmarks/plot_compare_olmo.py benchmarks/results/compare_olmo_cpu-2core_DATE.json

Writes ``.md`` and ``.png`` next to the JSON. The report starts with the summary table (the one
the README carries), then every measured number: limits, index builds, tokens per bucket and left
out, loader epochs (with the fraction of the random-row gather limit), exactness probes.
The figure: index-build tokens/s, loader tokens/s against the gather limits, token share per
bucket, and loader peak RSS.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

Row = dict[str, Any]


def _m(x: float) -> str:
    """Tokens/s in millions: ``1,650M``, ``30.4M``."""
    return f"{x / 1e6:,.0f}M" if x >= 1e8 else f"{x / 1e6:.3g}M"


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.1f}x" if a and b else "-"


CHECKS = (
    "rows_served_twice",
    "rows_never_served",
    "rows_crossing_documents",
    "rows_with_wrong_tokens",
)


def _outcome(r: Row) -> str:
    """One cell describing a loader/index result for the probes table."""
    if not r:
        return "-"
    if "error" in r:
        return f"**crash**: {r['error']}" + (f" ({r['at']})" if "at" in r else "")
    parts = []
    if "tokens_lost_to_wrong_length" in r:
        lost = r["tokens_lost_to_wrong_length"]
        parts.append(f"{lost:,} tokens silently lost" if lost else "no tokens lost")
        parts.append(f"{r['tokens_in_no_bucket']:,} tokens in no bucket")
    if "targets_conserved" in r:
        parts.append(
            "kept + dropped = all targets" if r["targets_conserved"] else "**targets lost**"
        )
        parts.append(f"{sum(r['dropped_tokens'].values()):,} dropped (counted by reason)")
    if "rows_served" in r:
        parts.append(f"{r['steps']:,} steps, {r['rows_served']:,} rows")
        for key in CHECKS:
            if r[key]:
                parts.append(f"**{r[key]:,} {key.replace('_', ' ')}**")
        if not any(r[k] for k in CHECKS):
            parts.append("0 twice / missing / crossing / wrong")
    return "; ".join(parts)


def _best_olmo(loader: list[Row], cur: str) -> Row:
    runs = [r["olmo"] for r in loader if r["curriculum"] == cur and "tokens_per_s" in r["olmo"]]
    return max(runs, key=lambda r: r["tokens_per_s"]) if runs else {}


def _dd(loader: list[Row], cur: str, w: int) -> Row:
    return next(
        (
            r["ddecomp"]
            for r in loader
            if r["curriculum"] == cur and r["workers"] == w and r["ddecomp"]
        ),
        {},
    )


def summary(res: Row) -> list[str]:
    """The README table: ddecomp vs OLMo-core's best, with the ratio."""
    idx = {(r["corpus"], r["min_len"]): r for r in res["index"]}
    lim = res["limits"]
    lines = [
        "| measured (same token file, same machine, one run) | ddecomp | OLMo-core "
        f"{res['meta']['olmo_core']} | ratio |",
        "|---|---|---|---|",
    ]
    for corpus_, label in (("long", "long documents"), ("web", "web-like, mean 600")):
        r = idx[(corpus_, 256)]
        d, o = (
            r["ddecomp"].get("index_tokens_per_s"),
            r["olmo"].get("bucket_documents_tokens_per_s"),
        )
        lines.append(
            f"| index build, {label}, 256..8192 (tokens/s) | {_m(d)} | {_m(o)} | {_ratio(d, o)} |"
        )
        d, o = r["ddecomp"].get("prepare_tokens_per_s"), r["olmo"].get("prepare_tokens_per_s")
        lines.append(
            f"| whole preparation, {label} (tokens/s) | {_m(d)} | {_m(o)} | {_ratio(d, o)} |"
        )
    for cur in ("grow-p2", "natural"):
        d, o = _dd(res["loader"], cur, 0), _best_olmo(res["loader"], cur)
        lines.append(
            f"| loader, full {cur} epoch, 1 process (tokens/s) | {_m(d['tokens_per_s'])} | "
            f"{_m(o['tokens_per_s'])} (best setting) | "
            f"{_ratio(d['tokens_per_s'], o['tokens_per_s'])} |"
        )
    d = _dd(res["loader"], "grow-p2", 0)
    o = _best_olmo(res["loader"], "grow-p2")
    d8, o8 = d["tokens_per_s_by_length"].get("8192", 0), o["tokens_per_s_by_length"].get("8192", 0)
    lines.append(
        f"| loader, grow-p2, steps of L = 8192 (tokens/s) | {_m(d8)} | {_m(o8)} | "
        f"{_ratio(d8, o8)} |"
    )
    for key, what in (
        ("gather_8192_tokens_per_s", "preallocated buffer"),
        ("gather_8192_fresh_buffer_tokens_per_s", "fresh buffer per batch"),
    ):
        g = lim[key]
        lines.append(
            f"| ... as a share of the random-row gather limit at 8192, {what} ({_m(g)}) | "
            f"{d8 / g:.0%} | {o8 / g:.0%} | |"
        )
    left = [sum(int(L) * n for L, n in x["rows_left_out"].items()) for x in (d, o)]
    lines.append(
        f"| tokens left out by the grow-p2 epoch (partial batches) | {left[0]:,} | {left[1]:,} | |"
    )
    td, to = (idx[("long", 256)][k]["targets_trained"] for k in ("ddecomp", "olmo"))
    lines.append(
        f"| targets trained, long documents, 256..8192 | {td:,} | {to:,} | {_ratio(td, to)} |"
    )
    runs = res["loader"] + [
        p
        for p in res["probes"]
        if "rows_served" in p.get("olmo", {}) or "rows_served" in p.get("ddecomp", {})
    ]
    for key in ("rows_served_twice", "rows_crossing_documents"):
        d_ = sum(r["ddecomp"].get(key, 0) for r in runs if r["ddecomp"])
        o_ = sum(r["olmo"].get(key, 0) for r in runs)
        lines.append(f"| {key.replace('_', ' ')}, all epochs | {d_:,} | {o_:,} | |")
    crashes_d = sum("error" in p["ddecomp"] for p in res["probes"] if p["ddecomp"])
    crashes_o = sum("error" in p["olmo"] for p in res["probes"])
    lost = sum(p["olmo"].get("tokens_lost_to_wrong_length", 0) for p in res["probes"])
    lines.append(
        f"| exactness probes that crash | {crashes_d} of {len(res['probes'])} | "
        f"{crashes_o} of {len(res['probes'])} | |"
    )
    lines.append(f"| tokens silently lost (max 256 / 65536) | 0 | {lost:,} | |")
    return lines


def report(res: Row) -> str:
    meta, lim = res["meta"], res["limits"]
    c = meta["corpus"]
    out = [
        f"# ddecomp vs OLMo-core VSL: same token files, one run ({meta['date']})",
        "",
        f"Machine: {meta['cpu']}, {meta['cores']} cores, no GPU; load average at start "
        f"{meta['loadavg_start'][0]:.1f}, at end {meta['loadavg_end'][0]:.1f} (the machine is "
        f"shared: numbers carry that noise). Python {meta['python']}, numpy {meta['numpy']}, "
        f"torch {meta['torch']}; OLMo-core {meta['olmo_core']} in its own venv (torch "
        f"{meta['olmo_torch']}, numpy {meta['olmo_numpy']}). "
        f"ddecomp commit {meta['ddecomp_commit']}. "
        f"Whole run {meta['run_s'] / 60:.1f} min. Reproduce: `python benchmarks/compare_olmo.py`.",
        "",
        f"Corpus (`benchmarks/corpus.py`, Debian python3.11-doc + linux-source-6.1, GPT-2-shaped "
        f"BPE, {c['vocab_size']:,} ids): long documents {c['long']['documents']:,} docs / "
        f"{c['long']['tokens']:,} tokens (mean {c['long']['mean']:,.0f}, median "
        f"{c['long']['p50']:,.0f}); web-like re-cut {c['web']['documents']:,} docs (mean "
        f"{c['web']['mean']:,.0f}, median {c['web']['p50']:,.0f}). Loader: "
        f"{meta['tokens_per_step']:,} tokens per step.",
        "",
        "## Summary",
        "",
        *summary(res),
        "",
        "## Physical limits (long corpus)",
        "",
        f"memcpy of the token bytes: {_m(lim['memcpy_tokens_per_s'])} tokens/s "
        f"({lim['memcpy_GB_per_s']:.2f} GB/s). Random-row gather of L+1-token rows into an int64 "
        f"batch of {meta['tokens_per_step']:,} tokens, preallocated: "
        f"{_m(lim['gather_256_tokens_per_s'])} tokens/s at L = 256, "
        f"{_m(lim['gather_8192_tokens_per_s'])} at L = 8192; into a fresh buffer per batch (what a "
        f"loader handing out new tensors pays): {_m(lim['gather_256_fresh_buffer_tokens_per_s'])} "
        f"and {_m(lim['gather_8192_fresh_buffer_tokens_per_s'])}.",
        "",
        "Whole preparation is not the same work on both sides: ddecomp copies the tokens into its "
        "dataset and checksums every file (sha256); OLMo-core indexes the token file in place.",
        "",
        "## Index build (best of 3 from page cache) and whole preparation",
        "",
        "| corpus | min | ddecomp index | OLMo `bucket_documents` | ratio "
        "| ddecomp prepare (workers=1) | OLMo `prepare()` | ddecomp left out (by reason) "
        "| OLMo tokens in no bucket |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res["index"]:
        d, o = r["ddecomp"], r["olmo"]
        drops = ", ".join(
            f"{k.replace('_', ' ')} {v:,}" for k, v in d.get("dropped_tokens", {}).items()
        )
        out.append(
            f"| {r['corpus']} | {r['min_len']} | {_m(d['index_tokens_per_s'])} | "
            f"{_m(o['bucket_documents_tokens_per_s'])} | "
            f"{_ratio(d['index_tokens_per_s'], o['bucket_documents_tokens_per_s'])} | "
            f"{_m(d['prepare_tokens_per_s'])} | {_m(o['prepare_tokens_per_s'])} | {drops} | "
            f"{o['tokens_in_no_bucket']:,} |"
        )
    out += [
        "",
        "Tokens per bucket (ddecomp: L targets per row; OLMo-core: 2^k tokens per piece):",
        "",
    ]
    for r in res["index"]:
        d, o = r["ddecomp"], r["olmo"]
        cells = " ".join(
            f"{L}: {d['bucket_tokens'].get(L, 0) / 1e6:.2f}M / "
            f"{o['bucket_tokens'].get(L, 0) / 1e6:.2f}M;"
            for L in o["bucket_tokens"]
        )
        out.append(f"- {r['corpus']}, min {r['min_len']} (ddecomp / OLMo-core): {cells}")
    out += [
        "",
        "## Loader: one full epoch, long corpus, 256..8192",
        "",
        "Only the `next()` calls are timed; served rows are checked afterwards (duplicates, never "
        "served, crossing a document, tokens equal to the file). At 8192 / limit: tokens/s of the "
        "steps of L = 8192 over the gather limit at 8192 (preallocated / fresh buffer).",
        "",
        "| curriculum | workers | tool (threads) | steps | tokens/s | batches/s | at 8192 / limit "
        "| peak RSS | twice / missing / crossing / wrong | rows left out per bucket |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    g8, f8 = lim["gather_8192_tokens_per_s"], lim["gather_8192_fresh_buffer_tokens_per_s"]
    for r in res["loader"]:
        for tool, x in (("ddecomp", r["ddecomp"]), (f"OLMo-core ({r['olmo_threads']})", r["olmo"])):
            if not x:
                continue
            if "error" in x:
                out.append(f"| {r['curriculum']} | {r['workers']} | {tool} | {_outcome(x)} |||||||")
                continue
            chk = "/".join(str(x[k]) for k in CHECKS)
            out.append(
                f"| {r['curriculum']} | {r['workers']} | {tool} | {x['steps']:,} | "
                f"{_m(x['tokens_per_s'])} | {x['batches_per_s']:,.0f} | "
                f"{x['tokens_per_s_by_length'].get('8192', 0) / g8:.0%} / "
                f"{x['tokens_per_s_by_length'].get('8192', 0) / f8:.0%} | "
                f"{x['peak_rss_bytes'] / 2**20:,.0f} MiB | {chk} | "
                f"{', '.join(f'{L}: {n}' for L, n in x['rows_left_out'].items())} |"
            )
    out += ["", "## Exactness probes", "", "| probe | ddecomp | OLMo-core |", "|---|---|---|"]
    for p in res["probes"]:
        out.append(f"| {p['probe']} | {_outcome(p['ddecomp'])} | {_outcome(p['olmo'])} |")
    return "\n".join(out) + "\n"


def figure(res: Row, path: Path) -> None:
    meta = res["meta"]
    fig, ax = plt.subplots(2, 2, figsize=(13, 9))
    idx = res["index"]
    labels = [f"{r['corpus']}\nmin {r['min_len']}" for r in idx]
    xs = range(len(idx))
    ax[0, 0].bar(
        [x - 0.2 for x in xs],
        [r["ddecomp"]["index_tokens_per_s"] / 1e6 for r in idx],
        0.4,
        label="ddecomp",
    )
    ax[0, 0].bar(
        [x + 0.2 for x in xs],
        [r["olmo"]["bucket_documents_tokens_per_s"] / 1e6 for r in idx],
        0.4,
        label="OLMo-core",
    )
    ax[0, 0].set(
        xticks=list(xs), xticklabels=labels, ylabel="M tokens/s", title="Index build (max 8192)"
    )
    ax[0, 0].legend()
    runs = []
    for r in res["loader"]:
        tag = f"{r['curriculum']}\nw{r['workers']}"
        if r["ddecomp"]:
            runs.append(
                (
                    tag,
                    "ddecomp",
                    r["ddecomp"].get("tokens_per_s", 0),
                    r["ddecomp"].get("peak_rss_bytes", 0),
                )
            )
        runs.append(
            (
                f"{tag} t{r['olmo_threads']}",
                "OLMo-core",
                r["olmo"].get("tokens_per_s", 0),
                r["olmo"].get("peak_rss_bytes", 0),
            )
        )
    colors = {"ddecomp": "C0", "OLMo-core": "C1"}
    for i, (_tag, tool, tps, rss) in enumerate(runs):
        ax[0, 1].bar(i, tps / 1e6, color=colors[tool])
        ax[1, 1].bar(i, rss / 2**20, color=colors[tool])
    for a, yl, title in (
        (ax[0, 1], "M tokens/s", "Loader, full epoch"),
        (ax[1, 1], "MiB", "Loader peak RSS"),
    ):
        a.set(xticks=range(len(runs)), ylabel=yl, title=title)
        a.set_xticklabels([t for t, *_ in runs], fontsize=7, rotation=90)
    lim = res["limits"]
    for L, ls in (("256", ":"), ("8192", "--")):
        ax[0, 1].axhline(
            lim[f"gather_{L}_tokens_per_s"] / 1e6, color="k", ls=ls, label=f"gather limit L={L}"
        )
        ax[0, 1].axhline(
            lim[f"gather_{L}_fresh_buffer_tokens_per_s"] / 1e6,
            color="grey",
            ls=ls,
            label=f"gather L={L}, fresh buffer",
        )
    ax[0, 1].set_yscale("log")
    ax[0, 1].legend(fontsize=8)
    r = next(x for x in idx if x["corpus"] == "long" and x["min_len"] == 256)
    Ls = list(r["olmo"]["bucket_tokens"])
    n = r["ddecomp"]["tokens"]
    ax[1, 0].bar(
        [i - 0.2 for i in range(len(Ls))],
        [r["ddecomp"]["bucket_tokens"].get(L, 0) / n for L in Ls],
        0.4,
        label="ddecomp",
    )
    ax[1, 0].bar(
        [i + 0.2 for i in range(len(Ls))],
        [r["olmo"]["bucket_tokens"][L] / n for L in Ls],
        0.4,
        label="OLMo-core",
    )
    ax[1, 0].set(
        xticks=range(len(Ls)),
        xticklabels=Ls,
        ylabel="share of tokens",
        title="Token share per bucket (long, 256..8192)",
    )
    ax[1, 0].legend()
    fig.suptitle(
        f"ddecomp vs OLMo-core {meta['olmo_core']} on the same token files "
        f"({meta['date']}, {meta['cores']} CPU cores)"
    )
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def render(json_path: Path) -> None:
    res = json.loads(Path(json_path).read_text())
    md = Path(json_path).with_suffix(".md")
    md.write_text(report(res))
    figure(res, md.with_suffix(".png"))
    print(f"wrote {md} and {md.with_suffix('.png')}", file=sys.stderr)


if __name__ == "__main__":
    render(Path(sys.argv[1]))
