"""Several inputs, one dataset (issue 21): ``--from-tokens F1 F2 ...`` (copied and in place),
``--from-megatron P1 P2 --in-place``, and ``--source-per-input`` for text INPUTs and token files.

Token identity: each input's ids lie in its own range, so every served row (plain and packed
tail rows) says which input it was read from, and that must be the row's recorded ``source``.
Without the new flags a dataset is byte for byte the one the code before wrote (fingerprints
computed at commit bc07052, :mod:`tests.preparing._golden`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ddecomp import TokensConfig, UserError, VSLLoader, open_dataset, prepare_tokens
from ddecomp.cli import main
from ddecomp.data.sources import dataset_row_sources, source_names
from ddecomp.data.verify import verify_dataset
from tests._fixtures import random_lengths
from tests.preparing._golden import (
    TEXT_KW,
    golden_text,
    golden_tokens,
    stable_fingerprint,
    text_inputs,
)

EOS = 7
KW: dict[str, Any] = dict(min_len=16, max_len=512, val_fraction=0.0, shard_size=6_000)
SPAN = 10_000  # input k holds ids in [10 + k * SPAN, 10 + (k + 1) * SPAN)


def _stream(k: int, n_docs: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    docs: list[np.ndarray] = []
    for n in random_lengths(n_docs, seed=seed, lo=2, hi=700):
        docs.append(rng.integers(10 + k * SPAN, 10 + (k + 1) * SPAN, size=int(n) - 1))
        docs.append(np.array([EOS]))
    return np.concatenate(docs).astype(np.uint16)


def _files(tmp: Path, kinds: tuple[str, ...] = ("raw", "npy", "raw")) -> list[Path]:
    out = []
    for k, kind in enumerate(kinds):
        toks = _stream(k, 120 + 40 * k, seed=30 + k)
        if kind == "npy":
            path = tmp / f"in{k}.npy"
            np.save(path, toks)
        else:
            path = tmp / f"in{k}.u16"
            toks.tofile(path)
        out.append(path)
    return out


def _served(ds: Any, L: int) -> np.ndarray:
    """Every row of bucket ``L`` as served (packed tail rows included: their padding is EOS)."""
    out = np.empty((ds.num_rows(L), L + 1), dtype=np.int64)
    ds.fill(L, np.arange(ds.num_rows(L)), out)
    return out


def _rows(root: Path) -> dict[int, list[list[int]]]:
    ds = open_dataset(root)
    return {L: _served(ds, L).tolist() for L in ds.bucket_lengths}


def _check_sources(root: Path, n_sources: int) -> np.ndarray:
    """Every row's tokens come from its recorded source's range; rows and targets per source add
    up to the dataset's; returns the rows per source."""
    ds = open_dataset(root)
    rows, targets = np.zeros(n_sources, np.int64), np.zeros(n_sources, np.int64)
    total_rows = total_targets = 0
    for L in ds.bucket_lengths:
        idx = np.arange(ds.num_rows(L))
        src = dataset_row_sources(ds, L, idx)
        toks = _served(ds, L)
        for row, s in zip(toks, src.tolist(), strict=True):
            real = row[row != EOS]
            assert real.size
            assert ((real - 10) // SPAN == s).all(), (L, s)
        np.add.at(rows, src, 1)
        np.add.at(targets, src, L)
        total_rows += idx.size
        total_targets += idx.size * L
    assert (rows > 0).all()  # vacuity guard: every source serves rows
    assert rows.sum() == total_rows
    assert targets.sum() == total_targets
    return rows


# ---- no new flag: the datasets the code before wrote -------------------------------------------
def test_one_token_file_gives_the_fingerprint_it_gave_before(tmp_path: Path) -> None:
    want = "4db416804805f34224c75aca21ca28b7dbde9fc2257c62d40ad410c32facd1f5"
    assert stable_fingerprint(golden_tokens(tmp_path)) == want
    (tmp_path / "b").mkdir()
    man = golden_tokens(tmp_path / "b", in_place=True)
    assert "tokens_files" not in man
    assert "file" not in man["shards"][0]["files"]["tokens"]
    assert stable_fingerprint(man) == (
        "7121f22053e5ff3b6192a4e25b1959b464716610e855531b62bb22d3dc4fa40e"
    )


def test_text_inputs_without_the_flag_give_the_fingerprint_they_gave_before(
    tmp_path: Path,
) -> None:
    man = golden_text(tmp_path)
    want = "a9957134a4e31a811665669bc904b8a84d2a432341786f1eca99968803cc245b"
    assert stable_fingerprint(man) == want
    assert "sources" not in man


# ---- text INPUTs, one source each --------------------------------------------------------------
def test_text_source_per_input_names_each_rows_input(tmp_path: Path) -> None:
    from ddecomp.preparing.tokenize import load_tokenizer

    man = golden_text(tmp_path, source_per_input=True, tails="pack")
    assert man["sources"]["names"] == ["a", "b.jsonl", "c"]
    shards = man["sources"]["shards"]
    assert shards == sorted(shards)
    assert set(shards) == {0, 1, 2}
    assert man["totals"]["documents"] == 160  # nothing lost or doubled by the grouping
    tok, _, _ = load_tokenizer(str(tmp_path / "txt" / "tokenizer.json"))
    ds = open_dataset(tmp_path / "txt")
    alphabets = ["abcde", "fghij", "klmno"]
    seen = np.zeros(3, np.int64)
    for L in ds.bucket_lengths:
        idx = np.arange(ds.num_rows(L))
        for row, s in zip(_served(ds, L), dataset_row_sources(ds, L, idx).tolist(), strict=True):
            text = tok.decode([int(t) for t in row if t != man["tokenizer"]["eos_id"]])
            letters = set(text) - {" ", "\ufffd"}
            assert letters, text
            assert letters <= set(alphabets[s]), (s, text[:40])
            seen[s] += 1
    assert (seen > 0).all()
    verify_dataset(tmp_path / "txt")


def test_text_source_per_input_refusals(tmp_path: Path) -> None:
    inputs = text_inputs(tmp_path)
    inner = str(Path(inputs[0]) / "0.jsonl")
    from ddecomp import PrepareConfig, prepare

    with pytest.raises(UserError, match=r"0\.jsonl is in input .*a and in input .*0\.jsonl"):
        prepare(PrepareConfig(tmp_path / "o", inputs=(inputs[0], inner), source_per_input=True))
    with pytest.raises(UserError, match=r"input .*b\.jsonl is given more than once"):
        prepare(PrepareConfig(tmp_path / "o", inputs=(inputs[1], inputs[1]), source_per_input=True))
    with pytest.raises(UserError, match="--source-per-input records each INPUT"):
        PrepareConfig(tmp_path / "o", source_per_input=True)
    assert not (tmp_path / "o").exists()


def test_a_rerun_with_or_without_the_flag_is_another_dataset(tmp_path: Path) -> None:
    man = golden_text(tmp_path)
    with pytest.raises(UserError, match=r"different arguments|--overwrite"):
        golden_text(tmp_path, source_per_input=True)
    again = golden_text(tmp_path, source_per_input=True, overwrite=True)
    assert "sources" in again
    assert again["fingerprint"] != man["fingerprint"]
    assert golden_text(tmp_path, source_per_input=True) == again  # resumed: nothing to do


# ---- several token files -------------------------------------------------------------------
def test_several_token_files_copied_carry_their_sources(tmp_path: Path) -> None:
    files = _files(tmp_path)
    man = prepare_tokens(
        TokensConfig(tuple(files), tmp_path / "d", eos_id=EOS, source_per_input=True, **KW)
    )
    assert man["sources"]["names"] == ["in0.u16", "in1.npy", "in2.u16"]
    assert man["totals"]["tokens"] == sum(
        (np.load(f) if f.suffix == ".npy" else np.fromfile(f, np.uint16)).size for f in files
    )
    rows = _check_sources(tmp_path / "d", 3)
    assert int(rows.sum()) > 100
    assert source_names(open_dataset(tmp_path / "d")) == man["sources"]["names"]
    verify_dataset(tmp_path / "d")
    plain = prepare_tokens(TokensConfig(tuple(files), tmp_path / "p", eos_id=EOS, **KW))
    assert "sources" not in plain
    assert _rows(tmp_path / "p") == _rows(tmp_path / "d")  # the same shards either way


def test_several_files_in_place_equal_the_copied_dataset(tmp_path: Path) -> None:
    files = _files(tmp_path)
    kw = {**KW, "tails": "pack", "val_fraction": 0.1}
    prepare_tokens(TokensConfig(tuple(files), tmp_path / "copy", eos_id=EOS, **kw))
    man = prepare_tokens(
        TokensConfig(
            tuple(files), tmp_path / "inp", eos_id=EOS, in_place=True, source_per_input=True, **kw
        )
    )
    assert [tf["path"] for tf in man["tokens_files"]] == [str(f.resolve()) for f in files]
    assert "tokens_file" not in man
    assert {sh["files"]["tokens"]["file"] for sh in man["shards"]} == {0, 1, 2}
    assert not list((tmp_path / "inp").rglob("*.tokens.bin"))
    rows = _rows(tmp_path / "copy")
    assert sum(len(v) for v in rows.values()) > 100
    assert _rows(tmp_path / "inp") == rows
    for split in ("train", "val"):
        got = [d.tolist() for d in open_dataset(tmp_path / "inp", split).documents()]
        assert got == [d.tolist() for d in open_dataset(tmp_path / "copy", split).documents()]
    _check_sources(tmp_path / "inp", 3)
    assert main(["stats", str(tmp_path / "inp")]) == 0
    loader = VSLLoader(open_dataset(tmp_path / "inp"), tokens_per_step=1024, seed=0)
    served = [int(s) for batch in loader for s in batch["source"].tolist()]
    assert set(served) == {0, 1, 2}
    verify_dataset(tmp_path / "inp")
    assert main(["verify", str(tmp_path / "inp")]) == 0


def test_one_file_with_source_per_input_is_one_source(tmp_path: Path) -> None:
    files = _files(tmp_path, ("raw",))
    man = prepare_tokens(
        TokensConfig(files[0], tmp_path / "d", eos_id=EOS, source_per_input=True, **KW)
    )
    assert man["sources"] == {"names": ["in0.u16"], "shards": [0] * man["totals"]["shards"]}
    _check_sources(tmp_path / "d", 1)


def test_several_token_files_refusals(tmp_path: Path) -> None:
    a, b = _files(tmp_path, ("raw", "raw"))
    link = tmp_path / "link.u16"
    link.symlink_to(b)
    empty = tmp_path / "empty.u16"
    empty.touch()
    wide = tmp_path / "wide.npy"
    np.save(wide, _stream(2, 30, seed=9).astype(np.uint32))
    cases: list[tuple[tuple[Path, ...], dict[str, Any], str]] = [
        ((a, b, a), {}, r"in0\.u16 is the same file as .*in0\.u16 \(given twice"),
        ((a, b, link), {}, r"link\.u16 is the same file as .*in1\.u16"),
        ((a, empty), {}, r"empty\.u16: empty \(no token\); leave it out"),
        ((a, wide), {"in_place": True}, r"wide\.npy holds uint32, .*in0\.u16 uint16: --in-place"),
    ]
    for files, extra, message in cases:
        with pytest.raises(UserError, match=message):
            prepare_tokens(TokensConfig(files, tmp_path / "o", eos_id=EOS, **KW, **extra))
    assert not (tmp_path / "o").exists()
    # copied, mixed dtypes are converted: ids of the uint32 file kept as they are
    man = prepare_tokens(TokensConfig((a, wide), tmp_path / "mixed", eos_id=EOS, **KW))
    assert man["inputs"]["dtypes"] == ["uint16", "uint32"]
    _check_sources_free = _rows(tmp_path / "mixed")
    assert sum(len(v) for v in _check_sources_free.values()) > 0


def test_the_cli_takes_several_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = _files(tmp_path, ("raw", "raw"))
    out = tmp_path / "d"
    argv = ["prepare", "--from-tokens", *map(str, files), "--eos-id", str(EOS), "--out",
            str(out), "--min-len", "16", "--max-len", "512", "--in-place",
            "--source-per-input", "--quiet"]  # fmt: skip
    assert main(argv) == 0
    assert f"{out}:" in capsys.readouterr().out
    _check_sources(out, 2)
    assert main(["prepare", "--source-per-input", "--out", str(tmp_path / "e")]) == 2
    assert "--source-per-input records each INPUT" in capsys.readouterr().err


# ---- Megatron prefixes in place ----------------------------------------------------------------
def test_megatron_prefixes_in_place_equal_the_copied_ones(tmp_path: Path) -> None:
    pytest.importorskip("megatron.core.datasets.indexed_dataset")
    from ddecomp.preparing.config import MegatronConfig
    from ddecomp.preparing.megatron import prepare_megatron
    from tests.preparing._megatron import random_docs, write_megatron

    kw: dict[str, Any] = dict(min_len=8, max_len=256, shard_size=3000, tails="pack")
    docs = [
        [[np.asarray(s) + 30_000 * k * (np.asarray(s) != 3) for s in d] for d in random_docs(
            90, seed=40 + k, eos=3, hi=30_000, ends_with_eos=1.0, empty=0.0)]
        for k in range(2)
    ]  # fmt: skip
    prefixes = tuple(
        str(write_megatron(tmp_path / f"m{k}", d, np.uint16)) for k, d in enumerate(docs)
    )
    prepare_megatron(MegatronConfig(prefixes, tmp_path / "copy", eos_id=3, **kw))
    man = prepare_megatron(
        MegatronConfig(
            prefixes, tmp_path / "inp", eos_id=3, in_place=True, source_per_input=True, **kw
        )
    )
    assert len(man["tokens_files"]) == 2
    assert man["sources"]["names"] == ["m0", "m1"]
    rows = _rows(tmp_path / "copy")
    assert sum(len(v) for v in rows.values()) > 50
    assert _rows(tmp_path / "inp") == rows
    ds = open_dataset(tmp_path / "inp")
    seen = np.zeros(2, np.int64)
    for L in ds.bucket_lengths:
        idx = np.arange(ds.num_rows(L))
        for row, s in zip(_served(ds, L), dataset_row_sources(ds, L, idx).tolist(), strict=True):
            real = row[row != 3]
            assert real.size
            assert ((real >= 30_000) == bool(s)).all()
            seen[s] += 1
    assert (seen > 0).all()
    verify_dataset(tmp_path / "inp")


# ---- attacks ---------------------------------------------------------------------------------
def test_source_names_tell_colliding_inputs_apart(tmp_path: Path) -> None:
    from ddecomp.preparing.perinput import source_names

    assert source_names(["x/data", "y/data", "z/other"]) == ["x/data", "y/data", "z/other"]
    assert source_names(["p/a/", "q/b.jsonl"]) == ["a", "b.jsonl"]
    assert source_names(["s3://bucket/web/", "s3://other/web"]) == ["bucket/web", "other/web"]
    with pytest.raises(UserError, match="given more than once"):
        source_names(["x/data", "./x/data"])


def test_an_empty_text_input_is_a_source_without_rows_and_said(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from ddecomp import PrepareConfig, prepare

    inputs = text_inputs(tmp_path)
    (tmp_path / "empty.jsonl").write_text("")
    kw = dict(TEXT_KW)
    with caplog.at_level("WARNING"):
        man = prepare(
            PrepareConfig(
                tmp_path / "d",
                inputs=(inputs[0], str(tmp_path / "empty.jsonl"), inputs[1]),
                source_per_input=True,
                **kw,
            )
        )
    assert man["sources"]["names"] == ["a", "empty.jsonl", "b.jsonl"]
    assert 1 not in man["sources"]["shards"]
    assert set(man["sources"]["shards"]) == {0, 2}
    assert "input empty.jsonl gave no document" in caplog.text


def test_adding_a_file_to_a_used_dataset_is_refused_and_workers_do_not_matter(
    tmp_path: Path,
) -> None:
    a, b, c = _files(tmp_path)
    kw = {**KW, "source_per_input": True}
    one = prepare_tokens(TokensConfig((a, b), tmp_path / "d", eos_id=EOS, workers=1, **kw))
    two = prepare_tokens(TokensConfig((a, b), tmp_path / "w2", eos_id=EOS, workers=2, **kw))
    assert one["fingerprint"] == two["fingerprint"]
    with pytest.raises(UserError, match="--overwrite"):
        prepare_tokens(TokensConfig((a, b, c), tmp_path / "d", eos_id=EOS, **kw))
    with pytest.raises(UserError, match="--overwrite"):  # the same files without sources
        prepare_tokens(TokensConfig((a, b), tmp_path / "d", eos_id=EOS, **KW))
    again = prepare_tokens(TokensConfig((a, b), tmp_path / "d", eos_id=EOS, **kw))
    assert again["fingerprint"] == one["fingerprint"]  # the same arguments: resumed as done


def test_an_interrupted_run_with_sources_resumes_to_the_same_dataset(tmp_path: Path) -> None:
    """Shards kept from the interrupted run and shards redone get their sources from the same
    plan: the resumed dataset is the uninterrupted one (text, and several files in place)."""
    text = golden_text(tmp_path, source_per_input=True)
    files = _files(tmp_path)
    kw = {**KW, "in_place": True, "source_per_input": True}
    toks = prepare_tokens(TokensConfig(tuple(files), tmp_path / "tok", eos_id=EOS, **kw))
    for root, man in ((tmp_path / "txt", text), (tmp_path / "tok", toks)):
        n = man["totals"]["shards"]
        assert n >= 4
        (root / "manifest.json").unlink()
        for i in (1, n - 2):  # an interrupted run: a shard of the first and of a later input
            (root / "shards" / f"{i:05d}.done.json").unlink()
    assert golden_text(tmp_path, source_per_input=True)["fingerprint"] == text["fingerprint"]
    again = prepare_tokens(TokensConfig(tuple(files), tmp_path / "tok", eos_id=EOS, **kw))
    assert again["fingerprint"] == toks["fingerprint"]
    assert again["sources"] == toks["sources"]
