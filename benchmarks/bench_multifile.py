"""Issue 21, several token files: ``--from-tokens F1 F2 --in-place`` against one file of the same
tokens (and both copied), so the cost of a second file (one more shard plan, one more mapped
file, one ``fstat`` more per read) is measured, not guessed.

Input: uint16 tokens (log-normal documents, mean ~665 tokens, each ending with EOS 50256, as in
``bench_megatron.py``) written once as ``whole.bin`` and once split at the document end nearest
the middle into ``part0.bin`` + ``part1.bin``: the same documents in the same order. Each run is
a fresh process (``--workers 1``, default shard size); peak RSS as in ``bench_engines.py``
(``ru_maxrss`` counts the mapped files' pages, ``peak_anon_rss_mb`` only heap and arrays). A
last step reads every row of each in-place dataset's bucket holding the most tokens, 64 rows per
read (the per-read guard checks one file or two), and reports rows/s.

Usage: ``python benchmarks/bench_multifile.py [--tokens 2e8]``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
from pathlib import Path
from typing import Any

from bench_engines import ROOT, child, du


def make_files(tmp: Path, n_tokens: int) -> dict[str, Any]:
    return child(f"""
import numpy as np
rng = np.random.default_rng(0)
toks = rng.integers(0, 50000, size={n_tokens}, dtype=np.uint16)
ends = np.cumsum(rng.lognormal(6.0, 1.0, size={n_tokens} // 100 + 10).astype(np.int64) + 1)
ends = np.append(ends[ends < toks.size], toks.size)
toks[ends - 1] = 50256
toks.tofile("{tmp}/whole.bin")
cut = int(ends[np.searchsorted(ends, toks.size // 2)])
toks[:cut].tofile("{tmp}/part0.bin")
toks[cut:].tofile("{tmp}/part1.bin")
emit({{"tokens": int(toks.size), "documents": int(ends.size), "split_at": cut}})
""")


RUN = """
import time
from ddecomp import TokensConfig, prepare_tokens
t = time.perf_counter()
files, out, in_place = {files!r}, {out!r}, {in_place!r}
src = files[0] if len(files) == 1 else tuple(files)
man = prepare_tokens(TokensConfig(src, out, 50256, dtype="uint16", in_place=in_place))
dt = time.perf_counter() - t
emit({{"s": round(dt, 2), "tokens_per_s": round(man["totals"]["tokens"] / dt),
      "shards": man["totals"]["shards"], "documents": man["totals"]["documents"],
      "kept_targets": man["totals"]["kept_targets"]}})
"""

READ = """
import time
import numpy as np
from ddecomp import open_dataset
ds = open_dataset({out!r})
L = max(ds.bucket_lengths, key=lambda b: b * ds.num_rows(b))  # the bucket with most tokens
n = ds.num_rows(L)
t = time.perf_counter()
for i in range(0, n, 64):
    idx = np.arange(i, min(i + 64, n))
    ds.fill(L, idx, np.empty((idx.size, L + 1), dtype=np.int64))
dt = time.perf_counter() - t
emit({{"bucket": L, "rows": n, "rows_per_s": round(n / dt), "tokens_per_s": round(n * L / dt)}})
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=float, default=2e8)
    ap.add_argument("--tmp", default="/tmp/ddecomp_bench_multifile")
    ap.add_argument("--out", default=None, help="JSON result (default: results/, dated)")
    args = ap.parse_args()
    tmp = Path(args.tmp)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    res: dict[str, Any] = {"date": datetime.date.today().isoformat(), "cpus": os.cpu_count()}
    res["input"] = make_files(tmp, int(args.tokens))
    print(json.dumps(res["input"]), flush=True)
    runs = {
        "one_file_in_place": ([tmp / "whole.bin"], True),
        "two_files_in_place": ([tmp / "part0.bin", tmp / "part1.bin"], True),
        "one_file_copied": ([tmp / "whole.bin"], False),
        "two_files_copied": ([tmp / "part0.bin", tmp / "part1.bin"], False),
    }
    for name, (files, in_place) in runs.items():
        out = tmp / name
        res[name] = child(
            RUN.format(files=[str(f) for f in files], out=str(out), in_place=in_place)
        )
        res[name]["written_mb"] = round(du(out) / 2**20, 1)
        if in_place:
            res[name]["read"] = child(READ.format(out=str(out)))
        print(json.dumps({name: res[name]}), flush=True)
        shutil.rmtree(out)
    path = Path(args.out or ROOT / f"benchmarks/results/multifile_cpu-2core_{res['date']}.json")
    path.write_text(json.dumps(res, indent=1) + "\n")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
