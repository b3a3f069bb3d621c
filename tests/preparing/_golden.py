"""Datasets whose fingerprints were computed with the code before ``--source-per-input`` for text
and several ``--from-tokens`` files (commit bc07052): the same inputs without the new flags must
give the same fingerprints. Paths, modification times and inodes differ between runs, so the
fields that hold them are replaced by a placeholder before hashing (:func:`stable_fingerprint`);
every other byte of the manifest (shards, file hashes, counts, inputs' sizes) is compared."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ddecomp import PrepareConfig, TokensConfig, prepare, prepare_tokens
from ddecomp.data.layout import fingerprint
from tests._fixtures import identity_tokens, random_lengths

TOKENS_KW: dict[str, Any] = dict(min_len=16, max_len=512, val_fraction=0.1, shard_size=20_000)
TEXT_KW: dict[str, Any] = dict(
    min_len=8, max_len=64, val_fraction=0.1, shard_size=3000, vocab_size=300, workers=1
)


def stable_fingerprint(man: dict[str, Any]) -> str:
    m = json.loads(json.dumps(man))
    inp = m["inputs"]
    for key in ("source", "paths", "listing_sha256"):
        if key in inp:
            inp[key] = "X"
    if "tokens_file" in m:
        m["tokens_file"].update(path="X", mtime_ns=0, inode=0)
    return fingerprint(m)


def token_file(tmp: Path) -> Path:
    toks = identity_tokens(random_lengths(400, seed=11, hi=900), eos=7)
    toks = np.where(toks == 7, 7, toks % 60_000 + 10).astype(np.uint32)
    path = tmp / "golden.u32"
    toks.tofile(path)
    return path


def golden_tokens(tmp: Path, in_place: bool = False, **kw: Any) -> dict[str, Any]:
    cfg = TokensConfig(
        token_file(tmp), tmp / "tok", eos_id=7, dtype="uint32", in_place=in_place, **TOKENS_KW
    )
    return prepare_tokens(cfg) if not kw else prepare_tokens(TokensConfig(**{**vars(cfg), **kw}))


def text_inputs(tmp: Path) -> list[str]:
    """``a/`` (two files), ``b.jsonl``, ``c/`` (one file): words from three alphabets."""
    rng = np.random.default_rng(5)

    def doc(alphabet: str) -> str:
        words = ["".join(rng.choice(list(alphabet), size=rng.integers(1, 8))) for _ in range(90)]
        return " ".join(words[: int(rng.integers(5, 90))])

    paths = [str(tmp / "a"), str(tmp / "b.jsonl"), str(tmp / "c")]
    if (tmp / "c").is_dir():  # written by an earlier call: the same files, their mtimes kept
        return paths
    (tmp / "a").mkdir()
    (tmp / "c").mkdir()
    for i in range(2):
        (tmp / "a" / f"{i}.jsonl").write_text(
            "".join(json.dumps({"text": doc("abcde")}) + "\n" for _ in range(40))
        )
    (tmp / "b.jsonl").write_text(
        "".join(json.dumps({"text": doc("fghij")}) + "\n" for _ in range(50))
    )
    (tmp / "c" / "x.jsonl").write_text(
        "".join(json.dumps({"text": doc("klmno")}) + "\n" for _ in range(30))
    )
    return paths


def golden_text(tmp: Path, **kw: Any) -> dict[str, Any]:
    return prepare(PrepareConfig(tmp / "txt", inputs=tuple(text_inputs(tmp)), **TEXT_KW, **kw))
