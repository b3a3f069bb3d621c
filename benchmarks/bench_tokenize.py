"""Tokenizing throughput: HF ``encode_batch`` vs ``ddecomp.preparing.tokenize.encode_documents``.

Corpus: the default corpus (Python stdlib sources, 31.5 MB on CPython 3.11.7). Tokenizers:
byte-level BPEs trained on it with :func:`ddecomp.preparing.tokenize.train_bpe`, one ~GPT-2-sized
(50257,
no hub here) and the 8192 default. For each it prints tokens/s of

- ``raw``: ``tok.encode_batch(texts)`` on all rayon threads, ids left in HF ``Encoding`` objects
  (the reference: HF's own batch throughput);
- ``fast``: ``tok.encode_batch_fast(texts)`` (no character offsets; what we call), for scale;
- ``ddecomp 1 proc``: ``encode_documents`` (ids + EOS in one numpy array) in this process, all
  rayon threads;
- ``ddecomp N procs``: ``encode_documents`` in N spawned processes (``--procs``, default 2), each
  single-threaded (``RAYON_NUM_THREADS=1``, ``TOKENIZERS_PARALLELISM=false`` set before
  ``tokenizers`` is imported), over ~4 MB shards of documents, as ``prepare --workers N`` runs it.
  Pool start-up is excluded; sending texts to the workers and ids back is included.

and the ratios to ``raw``. Each measurement is the best of ``--repeat`` runs, interleaved.
Run: ``PYTHONPATH=src python benchmarks/bench_tokenize.py [--max-mb 8] [--vocab 50257 8192]``.
The machine load average is printed too: on a shared machine, compare ratios, not absolutes.

``--long-doc MB [MB ...]`` instead measures the memory of one very long document: the default
corpus's sources joined (repeated as needed) into one document of MB million characters, encoded
by ``encode_documents`` in a fresh process with ``--long-doc-tokenizer`` (default: the tokenizer
``ddecomp prepare --out data/stdlib`` saved). Printed: the process RSS just before encoding (text
and tokenizer loaded), its peak during encoding (``VmHWM`` after resetting it through
``/proc/self/clear_refs``) and the difference::

    python benchmarks/bench_tokenize.py --long-doc 45 200
"""

from __future__ import annotations

import argparse
import datetime
import logging
import multiprocessing as mp
import os
import platform
import time
from collections.abc import Callable, Sequence
from typing import Any

# No module-level import of ``tokenizers``: the spawned workers import this script first, and
# rayon reads RAYON_NUM_THREADS when the library initialises.
from ddecomp.preparing.ingest import iter_documents
from ddecomp.preparing.inputs import default_corpus_files

_SHARD_CHARS = 4_000_000
_worker: dict[str, Any] = {}


def _init_worker(tok_json: str) -> None:
    os.environ["RAYON_NUM_THREADS"] = "1"
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    from tokenizers import Tokenizer

    _worker["tok"] = Tokenizer.from_str(tok_json)
    _worker["eos"] = _worker["tok"].token_to_id("<|endoftext|>")


def _encode_shard(texts: list[str]) -> int:
    from ddecomp.preparing.tokenize import encode_documents

    tokens, _ = encode_documents(_worker["tok"], texts, _worker["eos"])
    return int(tokens.size)


def _shards(texts: Sequence[str], max_chars: int) -> list[list[str]]:
    shards: list[list[str]] = [[]]
    size = 0
    for text in texts:
        shards[-1].append(text)
        size += len(text)
        if size >= max_chars:
            shards.append([])
            size = 0
    return [s for s in shards if s]


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _measure(
    tok: Any, texts: list[str], pool: Any, procs: int, repeat: int
) -> tuple[dict[str, int], dict[str, float]]:
    """Token counts and best times of the three ways, run interleaved ``repeat`` times."""
    from ddecomp.preparing.tokenize import encode_documents

    eos = tok.token_to_id("<|endoftext|>")
    assert eos is not None
    # At least 4 shards per process, so the processes finish together.
    shard_chars = min(_SHARD_CHARS, sum(map(len, texts)) // (4 * procs) + 1)
    shards = _shards(texts, shard_chars)
    ways: dict[str, Callable[[], int]] = {
        "raw": lambda: sum(len(e) for e in tok.encode_batch(texts, add_special_tokens=False)),
        "fast": lambda: sum(len(e) for e in tok.encode_batch_fast(texts, add_special_tokens=False)),
        "1proc": lambda: int(encode_documents(tok, texts, eos)[0].size),
        "nproc": lambda: sum(pool.imap(_encode_shard, shards)),
    }
    counts: dict[str, int] = {}
    best = dict.fromkeys(ways, float("inf"))
    for _ in range(repeat):
        for key, fn in ways.items():
            t0 = time.perf_counter()
            counts[key] = fn()
            best[key] = min(best[key], time.perf_counter() - t0)
    return counts, best


_LONG_DOC_CHILD = """
import os, sys, time
from tokenizers import Tokenizer
from ddecomp.preparing.ingest import iter_documents
from ddecomp.preparing.inputs import default_corpus_files
from ddecomp.preparing.tokenize import encode_documents

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
n_chars = int(float(sys.argv[1]) * 1e6)
tok = Tokenizer.from_file(sys.argv[2])
texts = list(iter_documents(default_corpus_files(), log_skips=False))
corpus = "\\n".join(texts)
del texts
text = (corpus * (n_chars // len(corpus) + 1))[:n_chars]
del corpus
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset VmHWM to the current RSS
before = status("VmRSS:")
t = time.perf_counter()
tokens, lengths = encode_documents(tok, [text], tok.token_to_id("<|endoftext|>"))
dt = time.perf_counter() - t
print(len(text), tokens.size, before, status("VmHWM:"), dt)
"""


def long_doc(mb: float, tokenizer: str) -> None:
    """Peak RSS of encoding one document of ``mb`` million characters, in a fresh process."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _LONG_DOC_CHILD, str(mb), tokenizer],
                         check=True, capture_output=True, text=True).stdout.split()  # fmt: skip
    chars, toks, before, peak, dt = int(out[0]), int(out[1]), int(out[2]), int(out[3]), out[4]
    print(f"  {chars / 1e6:.0f}M characters -> {toks / 1e6:.1f}M tokens in {float(dt):.1f} s: "
          f"RSS {before / 1e6:.0f} MB before encoding, peak {peak / 1e6:.0f} MB during it "
          f"(+{(peak - before) / 1e6:.0f} MB)", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=int, nargs="+", default=[50257, 8192])
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--max-mb", type=float, default=None, help="use the first MB of text")
    parser.add_argument(
        "--long-doc",
        type=float,
        nargs="+",
        metavar="MB",
        help="only measure the memory of one document of MB million characters",
    )
    parser.add_argument("--long-doc-tokenizer", default="data/stdlib/tokenizer.json")
    args = parser.parse_args()
    if args.long_doc:
        print(f"date      {datetime.datetime.now().isoformat(timespec='seconds')}")
        print(f"cpu       {_cpu_model()}, {os.cpu_count()} logical cores")
        print(f"load avg  {' '.join(f'{x:.1f}' for x in os.getloadavg())} (before)")
        print(f"tokenizer {args.long_doc_tokenizer}")
        for mb in args.long_doc:
            long_doc(mb, args.long_doc_tokenizer)
        print(f"load avg  {' '.join(f'{x:.1f}' for x in os.getloadavg())} (after)")
        return
    logging.basicConfig(level=logging.ERROR)  # the corpus has 32 counted skips; keep output short

    import numpy as np
    import tokenizers

    from ddecomp.preparing.tokenize import train_bpe

    texts = list(iter_documents(default_corpus_files()))
    if args.max_mb is not None:
        keep, size = [], 0
        for t in texts:
            if size >= args.max_mb * 1e6:
                break
            keep.append(t)
            size += len(t.encode())
        texts = keep
    n_bytes = sum(len(t.encode()) for t in texts)
    print(f"date      {datetime.datetime.now().isoformat(timespec='seconds')}")
    print(f"cpu       {_cpu_model()}, {os.cpu_count()} logical cores")
    print(f"load avg  {' '.join(f'{x:.1f}' for x in os.getloadavg())} (before)")
    print(
        f"software  Python {platform.python_version()}, tokenizers {tokenizers.__version__}, "
        f"numpy {np.__version__}"
    )
    print(f"corpus    default (stdlib .py): {len(texts)} documents, {n_bytes / 1e6:.1f} MB")

    ctx = mp.get_context("spawn")
    for vocab in args.vocab:
        t0 = time.perf_counter()
        tok = train_bpe(texts, vocab_size=vocab)
        print(f"\nvocab {tok.get_vocab_size()}: trained in {time.perf_counter() - t0:.1f} s")
        with ctx.Pool(args.procs, _init_worker, (tok.to_str(),)) as pool:
            pool.map(_encode_shard, [["warm up"]] * args.procs)
            counts, best = _measure(tok, texts, pool, args.procs, args.repeat)
        # encode_documents counts the EOS per document; compare like with like (text tokens).
        n_text = counts["raw"]
        assert counts["fast"] == n_text
        assert counts["1proc"] == counts["nproc"] == n_text + len(texts)
        rates = {k: n_text / t for k, t in best.items()}
        names = {
            "raw": "HF encode_batch (all threads)",
            "fast": "HF encode_batch_fast (all threads)",
            "1proc": "encode_documents, 1 process",
            "nproc": f"encode_documents, {args.procs} processes x 1 thread",
        }
        print(f"  {n_text / 1e6:.2f}M tokens, {n_bytes / n_text:.2f} bytes/token")
        for key, label in names.items():
            ratio = rates[key] / rates["raw"]
            print(f"  {label:<42} {rates[key] / 1e6:6.2f}M tokens/s  {ratio:6.1%} of raw")
    print(f"\nload avg  {' '.join(f'{x:.1f}' for x in os.getloadavg())} (after)")


if __name__ == "__main__":
    main()
