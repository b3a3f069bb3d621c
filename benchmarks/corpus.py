"""Build the offline benchmark corpus: real documents from Debian packages, GPT-2-like tokens.

No hub is reachable here, so the corpus comes from Debian's archive through ``apt-get download``
(the ordinary client; nothing is committed, the packages live in a temporary folder):

- ``python3.11-doc``: the reST sources of the Python 3.11 documentation (``_sources/*.rst.txt``,
  497 files, 12 MB). The HTML pages are the same text rendered, so they are not added twice.
- ``linux-source-6.1``: the kernel's ``Documentation/`` (``.rst``/``.txt``) and the C sources
  (``.c``/``.h``) of the core tree (``kernel mm fs net include lib block crypto security sound
  io_uring ipc init virt`` and ``arch/x86``). ``drivers/`` is left out: half of it is generated
  register headers, which would make the corpus one long repetitive document class.

One file is one document. Files with a NUL byte are skipped as binary and counted; non-UTF-8
files are decoded as Latin-1 and counted. Documents are shuffled with ``seed`` (so long and short
ones mix along the file) and cut, whole documents only, at ``--target-tokens``.

Tokenizer: a byte-level BPE with GPT-2's shape (50,257 ids, ``<|endoftext|>`` = 50,256, GPT-2's
pre-tokenizer regex via HF ``tokenizers``' ByteLevel), trained deterministically on a seeded
sample of the documents. Measured here: about 3.5 bytes per token on this mix.

Outputs (default ``/work/main/bench-data``, gitignored): ``docs.jsonl`` (``text``, ``source``),
``tokenizer.json``, ``long.tokens`` (flat uint16, EOS after every document, no header: what
OLMo-core and ``ddecomp prepare --from-tokens`` read), ``web.tokens`` (the same tokens re-cut
into log-normal documents of mean ~600 tokens, see :func:`lognormal_lengths`) and
``corpus.json`` (written last: parameters, counts, length percentiles, sha256, timings). A rerun
with the same parameters finds ``corpus.json`` and does nothing.

Usage: ``python benchmarks/corpus.py [--out DIR] [--target-tokens 80000000]``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "bench-data"
EOS_TOKEN = "<|endoftext|>"
LINUX_DIRS = (
    "Documentation",
    "kernel",
    "mm",
    "fs",
    "net",
    "include",
    "lib",
    "block",
    "crypto",
    "security",
    "sound",
    "io_uring",
    "ipc",
    "init",
    "virt",
    "arch/x86",
)
DOC_EXTS = (".rst", ".txt")
CODE_EXTS = (".c", ".h")


@dataclass(frozen=True)
class CorpusConfig:
    """What to build. ``sample_bytes`` of text train the BPE (more: slower, barely better)."""

    out_dir: Path = DEFAULT_OUT
    target_tokens: int = 80_000_000
    vocab_size: int = 50_257
    sample_bytes: int = 24_000_000
    web_mean: float = 600.0
    web_sigma: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.target_tokens < 1_000_000:
            raise ValueError(f"target_tokens {self.target_tokens} is below 1,000,000")
        if not 1_000 <= self.vocab_size <= 65_535:
            raise ValueError(f"vocab_size {self.vocab_size} must be in 1000..65535 (uint16 ids)")
        if self.web_mean < 2 or self.web_sigma <= 0:
            raise ValueError(
                f"web_mean {self.web_mean} must be >= 2, web_sigma {self.web_sigma} > 0"
            )

    def params(self) -> dict[str, object]:
        d = asdict(self)
        d.pop("out_dir")
        return d


# ---------------------------------------------------------------------------- pure helpers


def select_linux(path: str) -> bool:
    """Whether a path inside the kernel tarball (``linux-source-6.1/<dir>/...``) is a document."""
    parts = path.split("/", 1)
    if len(parts) < 2:
        return False
    rel = parts[1]
    if rel.startswith("Documentation/"):
        return rel.endswith(DOC_EXTS)
    return rel.endswith(CODE_EXTS) and any(rel.startswith(d + "/") for d in LINUX_DIRS)


def decode_text(raw: bytes) -> tuple[str | None, bool]:
    """``(text, was_utf8)``; ``text`` is None for binary (a NUL byte) or empty/blank files."""
    if b"\x00" in raw:
        return None, True
    try:
        text, utf8 = raw.decode("utf-8"), True
    except UnicodeDecodeError:
        text, utf8 = raw.decode("latin-1"), False
    return (text if text.strip() else None), utf8


def lognormal_lengths(total: int, mean: float, sigma: float, seed: int) -> np.ndarray:
    """Document lengths (>= 1, int64) drawn log-normal with the given mean, summing to ``total``.

    ``mu = ln(mean) - sigma^2 / 2`` makes the expectation ``mean``; sigma 1.0 gives a median of
    ~0.6 x mean, close to web crawls (RefinedWeb: mean ~600, median a few hundred tokens). The last
    length is trimmed so the sum is exact.
    """
    assert total >= 1, total
    assert mean >= 1, mean
    rng = np.random.default_rng([seed, 0x7EB])
    mu = np.log(mean) - sigma * sigma / 2
    parts: list[np.ndarray] = []
    have = 0
    while have < total:
        n = max(16, int((total - have) / mean * 1.1))
        x = np.maximum(np.rint(rng.lognormal(mu, sigma, size=n)), 1).astype(np.int64)
        parts.append(x)
        have += int(x.sum())
    lengths = np.concatenate(parts)
    ends = np.cumsum(lengths)
    k = int(np.searchsorted(ends, total))  # first index whose end reaches total
    lengths = lengths[: k + 1].copy()
    lengths[-1] -= int(ends[k]) - total
    assert int(lengths.sum()) == total
    assert int(lengths.min()) >= 1
    return lengths


def recut(tokens: np.ndarray, eos_id: int, lengths: np.ndarray) -> np.ndarray:
    """Drop every EOS from ``tokens``, cut the rest into ``lengths`` and end each piece with EOS."""
    content = tokens[tokens != eos_id]
    assert int(lengths.sum()) == content.size, "lengths must cover the non-EOS tokens exactly"
    return np.insert(content, np.cumsum(lengths), np.asarray(eos_id, dtype=tokens.dtype))


def doc_lengths(tokens: np.ndarray, eos_id: int) -> np.ndarray:
    """Lengths (EOS included) of the EOS-terminated documents of a flat token array."""
    ends = np.flatnonzero(tokens == eos_id) + 1
    assert ends.size, "no EOS in the token array"
    assert ends[-1] == tokens.size, "the token array must end with EOS"
    return np.diff(ends, prepend=0)


def length_summary(lengths: np.ndarray) -> dict[str, float]:
    """Count, total, mean and percentiles of document lengths (tokens, EOS included)."""
    assert lengths.size > 0
    pct = np.percentile(lengths, [1, 10, 50, 90, 99])
    out: dict[str, float] = {"documents": int(lengths.size), "tokens": int(lengths.sum())}
    out |= {"mean": float(lengths.mean()), "max": int(lengths.max())}
    out |= {f"p{p}": float(v) for p, v in zip((1, 10, 50, 90, 99), pct, strict=True)}
    out["share_docs_below_257"] = float((lengths < 257).mean())
    return out


# ---------------------------------------------------------------------------- I/O


def _download(tmp: Path) -> dict[str, Path]:
    """``apt-get download`` the two packages into ``tmp``; returns name -> .deb path."""
    names = ["python3.11-doc", "linux-source-6.1"]
    subprocess.run(["apt-get", "download", *names], cwd=tmp, check=True, capture_output=True)
    debs = {n: next(tmp.glob(f"{n}_*.deb")) for n in names}
    return debs


def iter_documents(
    debs: dict[str, Path], tmp: Path, counts: dict[str, int]
) -> Iterator[tuple[str, str]]:
    """Yield ``(source, text)`` for every selected file; skips are counted in ``counts``."""

    def emit(source: str, raw: bytes) -> Iterator[tuple[str, str]]:
        text, utf8 = decode_text(raw)
        if text is None:
            counts["skipped_binary_or_empty"] += 1
            return
        counts["latin1_decoded"] += 0 if utf8 else 1
        yield source, text

    pydir = tmp / "pydoc"
    subprocess.run(["dpkg-deb", "-x", str(debs["python3.11-doc"]), str(pydir)], check=True)
    for p in sorted(pydir.rglob("_sources/**/*.rst.txt")):
        yield from emit(f"python3.11-doc:{p.relative_to(pydir)}", p.read_bytes())
    # The kernel package holds one tar.xz; stream it instead of unpacking 1.3 GB to disk.
    inner = tmp / "linux.tar.xz"
    with open(inner, "wb") as f:
        fsys = subprocess.Popen(
            ["dpkg-deb", "--fsys-tarfile", str(debs["linux-source-6.1"])], stdout=subprocess.PIPE
        )
        subprocess.run(
            ["tar", "-xO", "./usr/src/linux-source-6.1.tar.xz"],
            stdin=fsys.stdout,
            stdout=f,
            check=True,
        )
        assert fsys.wait() == 0
    with tarfile.open(inner, mode="r|xz") as tar:
        for m in tar:
            if m.isfile() and select_linux(m.name):
                fh = tar.extractfile(m)
                assert fh is not None
                yield from emit(f"linux-source-6.1:{m.name}", fh.read())


def _train_tokenizer(texts: list[str], cfg: CorpusConfig) -> Tokenizer:
    """Byte-level BPE, GPT-2 shape: 256 bytes + merges up to vocab-1, then EOS as the last id."""

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=cfg.vocab_size - 1,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    tok.add_special_tokens([EOS_TOKEN])
    return tok


def _atomic_write(path: Path, data: bytes | np.ndarray) -> str:
    """Write via a temp file + rename; returns the sha256 of the bytes."""
    tmp = path.with_name(path.name + ".tmp")
    buf = data.tobytes() if isinstance(data, np.ndarray) else data
    tmp.write_bytes(buf)
    os.replace(tmp, path)
    return hashlib.sha256(buf).hexdigest()


def build(cfg: CorpusConfig) -> dict[str, object]:
    """Build the corpus (or return the existing ``corpus.json`` if built with the same params)."""
    out = cfg.out_dir
    stamp = out / "corpus.json"
    if stamp.is_file():
        old = json.loads(stamp.read_text())
        if old.get("params") == cfg.params():
            print(f"corpus: up to date in {out}", file=sys.stderr)
            return dict(old)
    out.mkdir(parents=True, exist_ok=True)
    t: dict[str, float] = {}
    counts = {"skipped_binary_or_empty": 0, "latin1_decoded": 0}
    with tempfile.TemporaryDirectory(prefix="ddecomp-corpus-") as tmpname:
        tmp = Path(tmpname)
        t0 = time.perf_counter()
        debs = _download(tmp)
        t["download_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        docs = list(iter_documents(debs, tmp, counts))
        t["unpack_select_s"] = time.perf_counter() - t0
    rng = np.random.default_rng([cfg.seed, 1])
    order = rng.permutation(len(docs))
    docs = [docs[i] for i in order]
    # Training sample: a seeded prefix of the shuffled documents up to sample_bytes.
    t0 = time.perf_counter()
    sample, size = [], 0
    for _, text in docs:
        if size >= cfg.sample_bytes:
            break
        sample.append(text)
        size += len(text)
    tok = _train_tokenizer(sample, cfg)
    eos_id = tok.token_to_id(EOS_TOKEN)
    assert eos_id is not None
    t["train_bpe_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    arrays: list[np.ndarray] = []
    total = 0
    kept = 0
    eos = np.array([eos_id], dtype=np.uint16)
    for i in range(0, len(docs), 512):
        batch = tok.encode_batch([d[1] for d in docs[i : i + 512]], add_special_tokens=False)
        for enc in batch:
            if total >= cfg.target_tokens:
                break
            ids = np.asarray(enc.ids, dtype=np.uint16)
            arrays += [ids, eos]
            total += ids.size + 1
            kept += 1
        if total >= cfg.target_tokens:
            break
    t["tokenize_s"] = time.perf_counter() - t0
    long_tokens = np.concatenate(arrays)
    del arrays
    lengths = lognormal_lengths(long_tokens.size - kept, cfg.web_mean - 1, cfg.web_sigma, cfg.seed)
    web_tokens = recut(long_tokens, eos_id, lengths)
    t0 = time.perf_counter()
    jsonl = "".join(json.dumps({"text": d[1], "source": d[0]}) + "\n" for d in docs[:kept])
    sha = {
        "docs.jsonl": _atomic_write(out / "docs.jsonl", jsonl.encode()),
        "long.tokens": _atomic_write(out / "long.tokens", long_tokens),
        "web.tokens": _atomic_write(out / "web.tokens", web_tokens),
    }
    tok.save(str(out / "tokenizer.json"))
    t["write_s"] = time.perf_counter() - t0
    info: dict[str, object] = {
        "params": cfg.params(),
        "eos_id": int(eos_id),
        "vocab_size": tok.get_vocab_size(),
        "dtype": "uint16",
        "sources_selected": len(docs),
        "documents_kept": kept,
        "text_bytes": sum(len(d[1].encode()) for d in docs[:kept]),
        "counts": counts,
        "long": length_summary(doc_lengths(long_tokens, eos_id)),
        "web": length_summary(doc_lengths(web_tokens, eos_id)),
        "sha256": sha,
        "seconds": t,
    }
    _atomic_write(stamp, json.dumps(info, indent=1).encode())
    return info


def _print_summary(info: dict[str, object]) -> None:
    print(f"eos_id={info['eos_id']} vocab={info['vocab_size']} text={info['text_bytes']:,} bytes")
    for name in ("long", "web"):
        s = info[name]
        assert isinstance(s, dict)
        print(
            f"{name:>4}: {s['documents']:>9,} docs {s['tokens']:>12,} tokens  mean {s['mean']:8.0f}"
            f"  p10 {s['p10']:6.0f} p50 {s['p50']:6.0f} p90 {s['p90']:7.0f} p99 {s['p99']:8.0f}"
            f"  max {s['max']:>9,}  <257: {s['share_docs_below_257']:.1%}"
        )
    secs = info["seconds"]
    assert isinstance(secs, dict)
    print("seconds:", {k: round(v, 1) for k, v in secs.items()})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--target-tokens", type=int, default=CorpusConfig.target_tokens)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    info = build(CorpusConfig(out_dir=a.out, target_tokens=a.target_tokens, seed=a.seed))
    _print_summary(info)
    return 0


if __name__ == "__main__":
    sys.exit(main())
