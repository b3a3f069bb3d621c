"""Issue 21's numbers: ``--from-megatron --in-place`` against ``--from-tokens --in-place`` on the
same tokens (and ``--from-megatron`` copied).

A synthetic Megatron dataset: ``PREFIX.bin`` of uint16 tokens (log-normal documents, mean ~600
tokens, each ending with EOS 50256, as Megatron's ``preprocess_data.py --append-eod`` writes
them) and its ``PREFIX.idx`` (one sequence per document, written here in Megatron's layout and
read back by megatron-core's ``IndexedDataset`` when it is installed). The same ``.bin`` is a flat
token file with EOS after each document, so ``--from-tokens PREFIX.bin --in-place`` indexes the
very same tokens, finding documents by an EOS scan instead of the ``.idx``. Each run is a fresh
process; peak RSS as in ``bench_engines.py`` (``ru_maxrss`` counts the mapped file's pages,
``peak_anon_rss_mb`` only heap and arrays).

Usage: ``python benchmarks/bench_megatron.py [--tokens 2e9]``.
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


def make_dataset(prefix: Path, n_tokens: int) -> dict[str, Any]:
    return child(f"""
import numpy as np
rng = np.random.default_rng(0)
n, pos, lengths = {n_tokens}, 0, []
with open("{prefix}.bin", "wb") as out:
    while pos < n:
        k = min(1 << 26, n - pos)
        toks = rng.integers(0, 50000, size=k, dtype=np.uint16)
        ends = np.cumsum(rng.lognormal(6.0, 1.0, size=k // 100 + 10).astype(np.int64) + 1)
        ends = ends[ends < k]
        ends = np.append(ends, k)
        toks[ends - 1] = 50256
        toks.tofile(out)
        lengths.append(np.diff(ends, prepend=0))
        pos += k
lengths = np.concatenate(lengths)
S = lengths.size
with open("{prefix}.idx", "wb") as f:  # Megatron's layout (megatron-core indexed_dataset.py)
    f.write(b"MMIDIDX\\x00\\x00")
    f.write((1).to_bytes(8, "little") + (8).to_bytes(1, "little"))  # version 1, uint16
    f.write(S.to_bytes(8, "little") + (S + 1).to_bytes(8, "little"))
    f.write(lengths.astype("<i4").tobytes())
    ptr = np.zeros(S, dtype="<i8")
    np.cumsum(lengths[:-1] * 2, out=ptr[1:])
    f.write(ptr.tobytes())
    f.write(np.arange(S + 1, dtype="<i8").tobytes())
checked = False
try:
    from megatron.core.datasets.indexed_dataset import IndexedDataset
    ds = IndexedDataset("{prefix}")
    last = ds[S - 1]
    checked = bool(len(ds) == S and last.size == lengths[-1] and last[-1] == 50256)
except ImportError:
    pass
emit({{"documents": int(S), "tokens": int(lengths.sum()), "megatron_core_reads_it": checked}})
""")


RUN = """
import time
from ddecomp import TokensConfig, prepare_tokens
from ddecomp.preparing.config import MegatronConfig
from ddecomp.preparing.megatron import prepare_megatron
t = time.perf_counter()
mode, src, out = {mode!r}, {src!r}, {out!r}
if mode == "tokens_in_place":
    man = prepare_tokens(TokensConfig(src + ".bin", out, 50256, dtype="uint16", in_place=True))
else:
    man = prepare_megatron(MegatronConfig((src,), out, 50256, in_place=mode == "megatron_in_place"))
dt = time.perf_counter() - t
emit({{"s": round(dt, 2), "tokens_per_s": round(man["totals"]["tokens"] / dt),
      "shards": man["totals"]["shards"], "documents": man["totals"]["documents"],
      "kept_targets": man["totals"]["kept_targets"]}})
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=float, default=2e9)
    ap.add_argument("--modes", default="megatron_in_place,tokens_in_place,megatron_copy")
    ap.add_argument("--tmp", default="/tmp/ddecomp_bench_megatron")
    ap.add_argument("--out", default=None, help="JSON result (default: results/, dated)")
    args = ap.parse_args()
    tmp = Path(args.tmp)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    prefix = tmp / "synthetic"
    res: dict[str, Any] = {"date": datetime.date.today().isoformat(), "cpus": os.cpu_count()}
    res["input"] = make_dataset(prefix, int(args.tokens))
    res["input"]["bin_mb"] = round(Path(f"{prefix}.bin").stat().st_size / 2**20, 1)
    res["input"]["idx_mb"] = round(Path(f"{prefix}.idx").stat().st_size / 2**20, 1)
    print(json.dumps(res["input"]), flush=True)
    for mode in args.modes.split(","):
        out = tmp / mode
        res[mode] = child(RUN.format(mode=mode, src=str(prefix), out=str(out)))
        res[mode]["written_mb"] = round(du(out) / 2**20, 1)
        print(json.dumps({mode: res[mode]}), flush=True)
        shutil.rmtree(out)
    path = Path(args.out or ROOT / f"benchmarks/results/megatron_cpu-2core_{res['date']}.json")
    path.write_text(json.dumps(res, indent=1) + "\n")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
