"""ddecomp vs OLMo-core's VSL datasets, side by side on the same token files, in one run.

    python benchmarks/compare_olmo.py            # ~5-10 min on 2 cores; everything below

One command reproduces everything: it creates the OLMo-core venv (``bench-venv/``, pins in
``benchmarks/requirements-olmo.txt``; never a ddecomp dependency) if missing, builds the corpus
(``benchmarks/corpus.py``: ~80M GPT-2-shaped tokens of long documents and the same tokens re-cut
web-like, mean ~600 tokens) if missing, then measures, each tool in its own process
(OLMo-core through ``benchmarks/olmo_side.py`` in its venv):

1. index build, min 256 and 64, max 8192, both corpora: ddecomp's pure index build
   (``document_fences`` + ``build_index``: EOS scan, decomposition, bucket offsets) against
   OLMo-core's ``bucket_documents``, best of 3 from page cache; and the whole preparation
   (``prepare_tokens`` with ``workers=1``: copy + sha256 + index files, against
   ``NumpyVSLDataset.prepare()``); tokens per bucket, tokens left out by reason, targets trained;
2. loader, one full epoch on the long corpus (256..8192, 65,536 tokens per step), natural and
   grow-p2 (8 cycles), 0 and 2 workers (OLMo-core also with its reader threads off, its best
   setting): tokens/s, batches/s, peak RSS of the process tree, rows served twice, rows never
   served, rows crossing a document, rows whose tokens differ from the file;
3. exactness probes: max length 256 and 65536; buckets with no rows (a middle one, the longest);
   grow-linear with bucket sizes that OLMo-core's rounding over-allocates; 2 x max tokens per
   step (fewer rows per batch than OLMo-core's 4 reader threads);
4. the physical limits: a memcpy of the token bytes, and a random-row gather of ``L + 1``-token
   rows into an int64 batch at L = 256 and 8192 (the faster of fancy indexing and one slice copy
   per row) into one preallocated buffer, and into a new ``torch.empty`` buffer per batch (what a
   loader that hands each batch out as a new tensor pays: fresh pages on every allocation), so
   each loader figure is also a fraction of the limit.

Results: ``benchmarks/results/compare_olmo_cpu-2core_<date>.json``, then
``plot_compare_olmo.py`` renders the ``.md`` report and the ``.png`` figure from it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT / "src")]
import corpus  # noqa: E402
from olmo_side import crossing_rows, row_fingerprints, served_twice, timed_epoch  # noqa: E402

VENV = ROOT / "bench-venv"
STEP_TOKENS = 65_536


def ensure_venv() -> Path:
    """The OLMo-core venv's python, created from ``requirements-olmo.txt`` if missing."""
    py = VENV / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        pip = [
            str(VENV / "bin" / "pip"),
            "install",
            "-q",
            "-r",
            str(HERE / "requirements-olmo.txt"),
        ]
        subprocess.run(pip, check=True)
    return py


def olmo(cmd: str, **args: Any) -> dict[str, Any]:
    """Run one ``olmo_side.py`` command in the OLMo-core venv; its JSON result."""
    res = subprocess.run(
        [str(VENV / "bin" / "python"), str(HERE / "olmo_side.py"), cmd, json.dumps(args)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if res.returncode != 0:
        return {"error": f"olmo_side {cmd} exited {res.returncode}: {res.stderr.strip()[-300:]}"}
    return dict(json.loads(res.stdout.strip().splitlines()[-1]))


def ddecomp_side(cmd: str, **args: Any) -> dict[str, Any]:
    """Run one ddecomp measurement in a fresh process (peak RSS is then its own)."""
    res = subprocess.run(
        [sys.executable, __file__, "_dd", cmd, json.dumps(args)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if res.returncode != 0:
        return {"error": f"{cmd} exited {res.returncode}: {res.stderr.strip()[-300:]}"}
    return dict(json.loads(res.stdout.strip().splitlines()[-1]))


# ---------------------------------------------------------------------------- ddecomp side


def dd_index(a: dict[str, Any]) -> dict[str, Any]:
    """Pure index build (best of 3) and the whole ``prepare_tokens`` (workers=1)."""
    from ddecomp.preparing.pipeline import TokensConfig, prepare_tokens
    from ddecomp.preparing.shards import IndexParams, build_index, document_fences

    tokens = np.memmap(a["tokens"], dtype=np.uint16, mode="r")
    _ = int(tokens.sum(dtype=np.uint64))  # page cache warm, as for OLMo-core
    params = IndexParams(a["min_len"], a["max_len"], "split", 0, 0.0)
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        fence, _trailing = document_fences(tokens, a["eos_id"])
        build_index(fence, 0, params)
        best = min(best, time.perf_counter() - t0)
    t0 = time.perf_counter()
    cfg = TokensConfig(
        a["tokens"], a["out"], a["eos_id"], dtype="uint16", min_len=a["min_len"],
        max_len=a["max_len"], workers=1, overwrite=True, long_docs="split",  # OLMo-core's cap
    )  # fmt: skip
    man = prepare_tokens(cfg)
    t_prep = time.perf_counter() - t0
    tr = man["splits"]["train"]
    n = int(tokens.size)
    drops = {k: int(v["tokens"]) for k, v in tr["dropped"].items()}
    return {
        "tokens": n, "documents": int(tr["documents"]),
        "index_s": best, "index_tokens_per_s": n / best,
        "prepare_s": t_prep, "prepare_tokens_per_s": n / t_prep,
        "bucket_tokens": {L: int(b["tokens"]) for L, b in tr["buckets"].items()},
        "bucket_rows": {L: int(b["rows"]) for L, b in tr["buckets"].items()},
        "dropped_tokens": drops, "targets": int(tr["targets"]),
        "targets_trained": int(tr["kept_targets"]),
        "targets_conserved": int(tr["kept_targets"]) + sum(drops.values())
        - int(tr["dropped"]["document_shorter_than_min"]["documents"]) == int(tr["targets"]),
    }  # fmt: skip


def dd_loader(a: dict[str, Any]) -> dict[str, Any]:
    """One full epoch of ``VSLLoader``; timed ``next()`` calls; served rows checked after."""
    import ddecomp
    from ddecomp.errors import UserError

    ds = ddecomp.open_dataset(a["dataset"])
    try:
        loader = ddecomp.VSLLoader(
            ds, tokens_per_step=a["tokens_per_step"], curriculum=a["curriculum"],
            cycles=a.get("cycles", 8), seed=0, world=ddecomp.World(num_workers=a["workers"]),
        )  # fmt: skip
    except (UserError, Exception) as e:
        return {"error": f"{type(e).__name__}: {e}"}
    plan = loader.plan
    steps: list[int] = []
    prints: list[np.ndarray] = []

    def record(batch: Any) -> None:
        steps.append(int(batch["step"]))
        prints.append(row_fingerprints(batch["input_ids"].numpy()))

    timed = timed_epoch(loader, record)
    starts_l, stops_l, want_l = [], [], []
    for s in steps:  # the rows the plan names for each served step, read back independently
        L = int(plan.step_length[s])
        st = ds.row_starts(L)[plan.rank_rows(s, 0, 1)]
        starts_l.append(st)
        stops_l.append(st + L + 1)
        want_l.append(row_fingerprints(np.stack([ds.tokens(x, x + L) for x in st.tolist()])))
    starts, stops = np.concatenate(starts_l), np.concatenate(stops_l)
    expected = sum(plan.batches(L) * plan.rows_per_batch(L) for L in plan.lengths)
    bad = int((np.concatenate(want_l) != np.concatenate(prints)).sum())
    return timed | {
        "steps_planned": len(plan), "rows_served": int(starts.size),
        "rows_expected": int(expected), "rows_served_twice": served_twice(starts),
        "rows_never_served": int(expected - np.unique(starts).size),
        "rows_crossing_documents": crossing_rows(starts, stops, ds.document_bounds()[1]),
        "rows_with_wrong_tokens": bad,
        "rows_left_out": {str(L): plan.remainder_rows(L) for L in plan.lengths},
    }  # fmt: skip


# ---------------------------------------------------------------------------- limits and files


def limits(path: Path, seed: int = 0) -> dict[str, Any]:
    """memcpy of the token bytes; random-row gathers of L+1 tokens into int64 batches."""
    tokens = np.fromfile(path, dtype=np.uint16)
    dst = np.empty_like(tokens)
    t = min(_timed(np.copyto, dst, tokens) for _ in range(3))
    out: dict[str, Any] = {"memcpy_tokens_per_s": tokens.size / t}
    out["memcpy_GB_per_s"] = tokens.nbytes / t / 1e9
    for L in (256, 8192):
        rows = STEP_TOKENS // L
        n_batches = 1000  # 65.5M tokens per pass, so one pass takes 30-250 ms
        rng = np.random.default_rng([seed, L])
        starts = rng.integers(0, tokens.size - L - 1, size=(n_batches, rows))
        best = min(_timed(_gather, tokens, starts, L, how) for how in ("fancy", "rows") * 2)
        out[f"gather_{L}_tokens_per_s"] = starts.size * L / best
        best = min(_timed(_gather, tokens, starts, L, "fresh") for _ in range(2))
        out[f"gather_{L}_fresh_buffer_tokens_per_s"] = starts.size * L / best
    return out


def _gather(tokens: np.ndarray, starts: np.ndarray, L: int, how: str) -> None:
    """Gather batches ``tokens[s : s + L + 1]`` for each row of ``starts`` into int64.

    ``fancy``: one fancy-indexing pass per batch; ``rows``: one slice copy per row; both into one
    preallocated buffer (which stays in cache at 65,536 tokens: the upper bound). ``fresh``: slice
    copies into a new ``torch.empty`` buffer per batch, as a loader that hands every batch out as
    a new tensor must allocate (torch does not cache CPU memory: each 0.5 MB buffer is fresh pages).
    """
    import torch

    buf = np.empty((starts.shape[1], L + 1), dtype=np.int64)
    ar = np.arange(L + 1, dtype=np.int64)
    for batch in starts:
        if how == "fancy":
            buf[...] = tokens[batch[:, None] + ar]
            continue
        if how == "fresh":
            buf = torch.empty((starts.shape[1], L + 1), dtype=torch.int64).numpy()
        for i, s in enumerate(batch.tolist()):
            buf[i] = tokens[s : s + L + 1]


def _timed(fn: Any, *args: Any) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def synth(path: Path, docs: list[tuple[int, int]], seed: int) -> Path:
    """A token file of ``count`` documents of ``n`` tokens for each ``(n, count)``, shuffled."""
    lens = np.concatenate([np.full(c, n, dtype=np.int64) for n, c in docs])
    lens = np.random.default_rng([seed, 3]).permutation(lens)
    toks = np.random.default_rng([seed, 4]).integers(
        0, 50_000, size=int(lens.sum()), dtype=np.uint16
    )
    toks[np.cumsum(lens) - 1] = 50_256
    toks.tofile(path)
    return path


# ---------------------------------------------------------------------------- the run


def _meta(info: dict[str, Any], py: Path) -> dict[str, Any]:
    import torch

    cpu = platform.processor()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    ver = subprocess.run(
        [str(py), "-c", "import importlib.metadata as m; "
         "print(m.version('ai2-olmo-core'), m.version('torch'), m.version('numpy'))"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    return {
        "date": datetime.date.today().isoformat(), "cpu": cpu, "cores": os.cpu_count(),
        "loadavg_start": os.getloadavg(), "python": platform.python_version(),
        "ddecomp_commit": commit, "numpy": np.__version__, "torch": torch.__version__,
        "olmo_core": ver[0], "olmo_torch": ver[1], "olmo_numpy": ver[2],
        "tokens_per_step": STEP_TOKENS, "corpus": info,
    }  # fmt: skip


def _both(
    res: list[dict[str, Any]], row: dict[str, Any], dd: dict[str, Any], ol: dict[str, Any]
) -> None:
    res.append(row | {"ddecomp": dd, "olmo": ol})
    print(json.dumps(row), "ddecomp:", _short(dd), "| olmo:", _short(ol), file=sys.stderr)


def _short(r: dict[str, Any]) -> str:
    keys = ("error", "index_tokens_per_s", "bucket_documents_tokens_per_s", "tokens_per_s",
            "rows_served_twice", "tokens_lost_to_wrong_length")  # fmt: skip
    return ", ".join(
        f"{k}={r[k]:.3g}" if isinstance(r[k], float) else f"{k}={r[k]}" for k in keys if k in r
    )


def run(data: Path, target_tokens: int) -> dict[str, Any]:
    py = ensure_venv()
    info = corpus.build(corpus.CorpusConfig(out_dir=data, target_tokens=target_tokens))
    eos, vocab = int(info["eos_id"]), int(info["vocab_size"])  # type: ignore[call-overload]
    work = data / "compare"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    files = {name: data / f"{name}.tokens" for name in ("long", "web")}
    ids = {"eos_id": eos, "vocab_size": vocab}
    out: dict[str, Any] = {"meta": _meta(info, py), "index": [], "loader": [], "probes": []}
    t_start = time.perf_counter()
    out["limits"] = limits(files["long"])
    print("limits:", out["limits"], file=sys.stderr)

    def index(key: str, tok: Path, mn: int, mx: int) -> tuple[dict[str, Any], dict[str, Any]]:
        dd = ddecomp_side("index", tokens=str(tok), out=str(work / f"dd-{key}"), min_len=mn,
                          max_len=mx, eos_id=eos)  # fmt: skip
        ol = olmo("index", tokens=str(tok), work_dir=str(work / f"olmo-{key}"), min_len=mn,
                  max_len=mx, **ids)  # fmt: skip
        return dd, ol

    for name, tok in files.items():
        for mn in (256, 64):
            dd, ol = index(f"{name}-{mn}", tok, mn, 8192)
            _both(out["index"], {"corpus": name, "min_len": mn, "max_len": 8192}, dd, ol)

    def loaders(
        key: str, tok: Path, mn: int, mx: int, cur: str, w: int, **kw: Any
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        step = kw.pop("tokens_per_step", STEP_TOKENS)
        dd = ddecomp_side("loader", dataset=str(work / f"dd-{key}"), tokens_per_step=step,
                          curriculum=cur, workers=w)  # fmt: skip
        ol = olmo("loader", tokens=str(tok), work_dir=str(work / f"olmo-{key}"), min_len=mn,
                  max_len=mx, curriculum=cur, workers=w, tokens_per_step=step,
                  **ids, **kw)  # fmt: skip
        return dd, ol

    for cur in ("natural", "grow-p2"):
        for w in (0, 2):
            dd, ol = loaders("long-256", files["long"], 256, 8192, cur, w)
            _both(
                out["loader"], {"curriculum": cur, "workers": w, "olmo_threads": "default"}, dd, ol
            )
        ol = olmo("loader", tokens=str(files["long"]), work_dir=str(work / "olmo-long-256"),
                  min_len=256, max_len=8192, curriculum=cur, workers=0, threads=0,
                  tokens_per_step=STEP_TOKENS, **ids)  # fmt: skip
        _both(out["loader"], {"curriculum": cur, "workers": 0, "olmo_threads": 0}, {}, ol)

    probes = out["probes"]
    for mn, mx in ((64, 256), (256, 65536)):
        key = f"long-{mn}-{mx}"
        dd, ol = index(key, files["long"], mn, mx)
        _both(probes, {"probe": f"max {mx} (min {mn}): index"}, dd, ol)
        dd, ol = loaders(key, files["long"], mn, mx, "natural", 0)
        _both(probes, {"probe": f"max {mx} (min {mn}): natural epoch"}, dd, ol)
    empty = {
        "empty middle buckets (512, 2048, 4096)": [(1281, 2560), (8193, 160)],
        "empty longest bucket (8192)": [(1281, 2560)],
    }
    for i, (label, docs) in enumerate(empty.items()):
        tok = synth(work / f"empty{i}.tokens", docs, seed=i)
        index(f"empty{i}", tok, 256, 8192)
        for cur in ("natural", "grow-p2"):
            dd, ol = loaders(f"empty{i}", tok, 256, 8192, cur, 0)
            _both(probes, {"probe": f"{label}: {cur} epoch"}, dd, ol)
    awk = olmo("awkward", num_buckets=6)["per_cycle_batches_overallocated"]
    c = int(awk["5"])  # the longest bucket: fewest documents for the same number of batches
    docs = [(L + 1, 8 * STEP_TOKENS // L) for L in (256, 512, 1024, 2048, 4096)]
    tok = synth(work / "awkward.tokens", [*docs, (8193, 8 * c * STEP_TOKENS // 8192)], seed=7)
    index("awkward", tok, 256, 8192)
    dd, ol = loaders("awkward", tok, 256, 8192, "grow-linear", 0)
    label = f"grow-linear, 8 cycles, 8192-bucket with {8 * c} batches (others 8)"
    _both(probes, {"probe": label}, dd, ol)
    dd, ol = loaders("long-256", files["long"], 256, 8192, "natural", 0, tokens_per_step=16_384)
    _both(probes, {"probe": "16,384 tokens per step (2 rows of 8192): natural epoch"}, dd, ol)
    out["meta"]["loadavg_end"] = os.getloadavg()
    out["meta"]["run_s"] = time.perf_counter() - t_start
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_dd":  # internal: one ddecomp measurement in this fresh process
        fn = {"index": dd_index, "loader": dd_loader}[argv[1]]
        print(json.dumps(fn(json.loads(argv[2]))))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=corpus.DEFAULT_OUT)
    ap.add_argument("--target-tokens", type=int, default=corpus.CorpusConfig.target_tokens)
    ap.add_argument("--results", type=Path, default=HERE / "results")
    ap.add_argument("--hardware", default="cpu-2core")
    a = ap.parse_args(argv)
    res = run(a.data, a.target_tokens)
    a.results.mkdir(parents=True, exist_ok=True)
    path = a.results / f"compare_olmo_{a.hardware}_{res['meta']['date']}.json"
    path.write_text(json.dumps(res, indent=1) + "\n")
    print(f"wrote {path}", file=sys.stderr)
    import plot_compare_olmo

    plot_compare_olmo.render(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
