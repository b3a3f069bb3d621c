"""prepare / prepare_tokens: token identity, drops accounted, determinism, resume, refusals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ddecomp import TokensConfig, UserError, decompose, open_dataset, prepare_tokens
from ddecomp.data.layout import MANIFEST
from tests._fixtures import EOS, identity_tokens, random_lengths


def _rows_by_doc(ds) -> dict[int, list[tuple[int, np.ndarray]]]:
    starts, _ = ds.document_bounds()
    out: dict[int, list[tuple[int, np.ndarray]]] = {}
    for L in ds.bucket_lengths:
        rs = ds.row_starts(L)
        rows = ds.rows(L, np.arange(rs.size))
        doc = np.searchsorted(starts, rs, side="right") - 1
        for d, s, row in zip(doc.tolist(), rs.tolist(), rows, strict=True):
            out.setdefault(d, []).append((s, row))
    return out


@pytest.mark.parametrize(
    ("shard_tokens", "long_docs"), [(None, "split"), (5_000, "split"), (5_000, "spread")]
)
def test_rows_concatenate_back_to_each_document_minus_the_tail(
    tmp_path: Path, shard_tokens, long_docs
) -> None:
    lens = random_lengths(300, seed=3, hi=5000)
    toks = identity_tokens(lens)
    man = prepare_tokens(
        TokensConfig(
            toks, tmp_path, EOS, min_len=16, max_len=1024, shard_size=shard_tokens,
            long_docs=long_docs,
        )
    )  # fmt: skip
    assert man["long_docs"] == long_docs
    if shard_tokens is None:
        assert man["totals"]["shards"] == 1
    else:
        assert man["totals"]["shards"] > 10
    ds = open_dataset(tmp_path)
    docs = list(ds.documents())
    assert len(docs) == lens.size
    by_doc = _rows_by_doc(ds)
    assert len(by_doc) > 200  # vacuity guard: most documents have pieces
    for d, doc in enumerate(docs):
        assert doc[-1] == EOS
        assert doc.size == lens[d]
        pieces = sorted(by_doc.get(d, []), key=lambda x: x[0])
        if long_docs == "split":
            assert [r.size - 1 for _, r in pieces] == decompose(int(lens[d]), 16, 1024)
        else:  # random pieces of long documents, the same targets in all
            assert sum(r.size - 1 for _, r in pieces) == sum(decompose(int(lens[d]), 16, 1024))
        if not pieces:
            continue
        rebuilt = np.concatenate([r[:-1] for _, r in pieces] + [pieces[-1][1][-1:]])
        np.testing.assert_array_equal(rebuilt, doc[: rebuilt.size])  # token identity
    tr = man["splits"]["train"]
    d = tr["dropped"]
    assert tr["tokens"] == int(lens.sum())
    assert tr["documents"] == lens.size
    assert tr["targets"] == tr["kept_targets"] + d["tail_below_min"]["tokens"] + (
        d["document_shorter_than_min"]["tokens"] - d["document_shorter_than_min"]["documents"]
    )
    assert d["document_shorter_than_min"]["documents"] == int((lens - 1 < 16).sum())


def test_workers_and_shards_do_not_change_the_result(tmp_path: Path) -> None:
    toks = identity_tokens(random_lengths(400, seed=4), eos=0).astype(np.uint32) % 60000
    toks[toks == 0] = 1
    toks[np.cumsum(random_lengths(400, seed=4)) - 1] = 0
    a = prepare_tokens(
        TokensConfig(toks, tmp_path / "a", 0, min_len=8, max_len=512, shard_size=20_000)
    )
    b = prepare_tokens(
        TokensConfig(toks, tmp_path / "b", 0, min_len=8, max_len=512, shard_size=20_000, workers=2)
    )
    assert a["totals"]["shards"] > 3
    assert a["fingerprint"] == b["fingerprint"]
    assert a["dtype"] == "uint16"  # all ids fit
    for sh in a["shards"]:
        for f in sh["files"].values():
            assert (tmp_path / "a" / f["path"]).read_bytes() == (
                tmp_path / "b" / f["path"]
            ).read_bytes()


def test_validation_split_partitions_documents_by_seed(tmp_path: Path) -> None:
    lens = random_lengths(500, seed=5, lo=20, hi=800)
    toks = identity_tokens(lens)
    m = prepare_tokens(
        TokensConfig(toks, tmp_path / "a", EOS, min_len=16, max_len=256, val_fraction=0.2)
    )
    tr, va = open_dataset(tmp_path / "a"), open_dataset(tmp_path / "a", "val")
    s_tr, s_va = tr.document_bounds()[0], va.document_bounds()[0]
    assert 60 < s_va.size < 140
    assert s_tr.size + s_va.size == lens.size
    assert not set(s_tr.tolist()) & set(s_va.tolist())
    for L in va.bucket_lengths:  # val rows start inside val documents only
        doc_starts = np.sort(s_va)
        starts = va.row_starts(L)
        assert np.isin(
            doc_starts[np.searchsorted(doc_starts, starts, side="right") - 1], s_va
        ).all()
    again = prepare_tokens(
        TokensConfig(toks, tmp_path / "b", EOS, min_len=16, max_len=256, val_fraction=0.2)
    )
    other = prepare_tokens(
        TokensConfig(toks, tmp_path / "c", EOS, min_len=16, max_len=256, val_fraction=0.2, seed=1)
    )
    assert again["fingerprint"] == m["fingerprint"] != other["fingerprint"]


def test_ten_million_token_document_and_ids_beyond_uint16(tmp_path: Path) -> None:
    n = 10_000_000
    toks = (np.arange(n, dtype=np.uint32) % 100_000) + 1  # ids up to 100000: needs uint32
    toks[-1] = 0
    man = prepare_tokens(
        TokensConfig(toks, tmp_path, 0, min_len=256, max_len=8192, long_docs="split")
    )  # split: the rows of 8192 are counted below
    assert man["dtype"] == "uint32"
    assert man["tokenizer"]["vocab_size"] == 100_001
    ds = open_dataset(tmp_path)
    assert ds.num_rows(8192) == (n - 1) // 8192
    last = ds.num_rows(8192) - 1
    np.testing.assert_array_equal(ds.rows(8192, [last])[0], toks[last * 8192 : last * 8192 + 8193])
    assert int(ds.rows(8192, [10])[0].max()) > 65535


def test_trailing_tokens_without_eos_form_a_last_document(tmp_path: Path, caplog) -> None:
    toks = identity_tokens([100, 50])
    toks = np.concatenate([toks, np.arange(1000, 1040, dtype=np.uint32)])
    man = prepare_tokens(TokensConfig(toks, tmp_path, EOS, min_len=8, max_len=64))
    assert man["totals"]["documents"] == 3
    assert "does not end with EOS" in caplog.text


def test_same_arguments_are_idempotent_other_arguments_refused(tmp_path: Path) -> None:
    toks = identity_tokens(random_lengths(50, seed=6))
    m1 = prepare_tokens(TokensConfig(toks, tmp_path, EOS, min_len=16, max_len=256))
    mtime = (tmp_path / MANIFEST).stat().st_mtime_ns
    m2 = prepare_tokens(TokensConfig(toks, tmp_path, EOS, min_len=16, max_len=256))
    assert m1["fingerprint"] == m2["fingerprint"]
    assert (tmp_path / MANIFEST).stat().st_mtime_ns == mtime  # nothing rewritten
    with pytest.raises(UserError, match=r"other arguments \(differs in: max_len\).*--overwrite"):
        prepare_tokens(TokensConfig(toks, tmp_path, EOS, min_len=16, max_len=512))
    m3 = prepare_tokens(TokensConfig(toks, tmp_path, EOS, min_len=16, max_len=512, overwrite=True))
    assert m3["max_len"] == 512
    assert open_dataset(tmp_path).max_len == 512


def test_foreign_directory_and_empty_input_write_nothing(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("hello")
    with pytest.raises(UserError, match="not empty"):
        prepare_tokens(TokensConfig(identity_tokens([10]), tmp_path, EOS, min_len=2, max_len=4))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]
    with pytest.raises(UserError, match="empty"):
        prepare_tokens(TokensConfig(np.zeros(0, np.uint16), tmp_path / "new", 0))
    assert not (tmp_path / "new").exists()


def _run_cli(*args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "ddecomp", *args], env=env, **kw)


@pytest.mark.slow
def test_killed_prepare_resumes_to_the_uninterrupted_result(tmp_path: Path) -> None:
    """SIGKILL a text prepare after some shards are done; the rerun keeps them and matches."""
    rng = np.random.default_rng(7)
    words = np.array(["alpha", "beta", "gamma", "delta", "eps", "zeta", "eta", "theta", "\n"])
    docs = [
        " ".join(words[rng.integers(0, words.size, rng.integers(50, 3000))]) for _ in range(1500)
    ]
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    common = [str(data), "--vocab-size", "300", "--min-len", "16", "--max-len", "1024",
              "--shard-size", "0.05", "--workers", "1", "--quiet"]  # fmt: skip
    ref = _run_cli("prepare", *common, "--out", str(tmp_path / "ref"))
    assert ref.wait(timeout=300) == 0
    out = tmp_path / "run"
    proc = _run_cli("prepare", *common, "--out", str(out), stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(out.glob("shards/*.done.json"))) < 3:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (out / "shards" / ".00099.tokens.bin.abc.tmp").write_bytes(
        b"half"
    )  # as a kill mid-write leaves
    done_before = len(list(out.glob("shards/*.done.json")))
    assert done_before >= 3
    assert not (out / MANIFEST).exists()
    again = _run_cli("prepare", *common, "--out", str(out), stderr=subprocess.PIPE, text=True)
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert "kept from an earlier run" in err
    a = json.loads((tmp_path / "ref" / MANIFEST).read_text())
    b = json.loads((out / MANIFEST).read_text())
    assert a["fingerprint"] == b["fingerprint"]
    assert a["totals"]["shards"] > done_before
    assert not list(out.glob("**/*.tmp"))


def test_rows_of_an_empty_request_or_an_empty_bucket(tmp_path: Path) -> None:
    toks = identity_tokens([49])  # one document, shorter than the longest bucket's rows
    prepare_tokens(TokensConfig(toks, tmp_path, EOS, min_len=4, max_len=1024))
    ds = open_dataset(tmp_path)
    assert ds.num_rows(1024) == 0
    assert ds.rows(1024, []).shape == (0, 1025)
    row = ds.rows(32, [0], out=np.zeros((1, 33), dtype=np.int64))
    np.testing.assert_array_equal(row[0], np.arange(33))
    with pytest.raises(IndexError):
        ds.rows(32, [1])


def test_one_minimum_vocabulary_for_config_and_training() -> None:
    from ddecomp import PrepareConfig
    from ddecomp.preparing.config import MIN_TRAIN_VOCAB
    from ddecomp.preparing.tokenize import train_bpe

    assert MIN_TRAIN_VOCAB == 257  # 256 bytes + <|endoftext|>
    PrepareConfig(out=Path("unused"), vocab_size=MIN_TRAIN_VOCAB)
    with pytest.raises(UserError, match="at least 257"):
        PrepareConfig(out=Path("unused"), vocab_size=MIN_TRAIN_VOCAB - 1)
    with pytest.raises(UserError, match="at least 257"):
        train_bpe(["some text"], vocab_size=MIN_TRAIN_VOCAB - 1)
    assert train_bpe(["some text"], vocab_size=MIN_TRAIN_VOCAB).get_vocab_size() <= 257


def test_overwrite_never_replaces_a_tokenizer_a_tokens_run_did_not_write(tmp_path: Path) -> None:
    toks = identity_tokens(random_lengths(50, seed=6))
    prepare_tokens(TokensConfig(toks, tmp_path, EOS, min_len=16, max_len=256))
    (tmp_path / "tokenizer.json").write_text("mine")
    with pytest.raises(UserError, match=r"tokenizer\.json was not written by ddecomp"):
        prepare_tokens(TokensConfig(toks, tmp_path, EOS, min_len=16, max_len=512, overwrite=True))
    assert (tmp_path / "tokenizer.json").read_text() == "mine"
    assert open_dataset(tmp_path).max_len == 256  # the dataset is untouched too


def test_a_run_killed_in_its_first_write_leaves_a_directory_that_is_still_free(
    tmp_path: Path,
) -> None:
    (tmp_path / "..prepare.json.k1ll3d.tmp").write_text("{")  # as a kill mid-write leaves
    toks = identity_tokens(random_lengths(50, seed=6))
    man = prepare_tokens(TokensConfig(toks, tmp_path, EOS, min_len=16, max_len=256))
    assert man["totals"]["documents"] == 50
