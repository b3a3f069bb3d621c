"""``prepare --from-megatron``: Megatron datasets written by megatron-core's own builder give the
same dataset as the same documents in a flat token file with EOS after each."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ddecomp import DataError, TokensConfig, UserError, open_dataset, prepare_tokens
from ddecomp.cli import main
from ddecomp.data.verify import verify_dataset
from ddecomp.preparing.config import MegatronConfig
from ddecomp.preparing.megatron import prepare_megatron, read_index
from tests.preparing._megatron import flat_with_eos, random_docs, write_megatron

pytest.importorskip("megatron.core.datasets.indexed_dataset")

# `split` (deterministic pieces): the default `spread` draws its lengths per shard, and a Megatron
# input is cut into shards per prefix, so only `split` can give the flat file's rows exactly.
KW: dict[str, Any] = dict(
    min_len=8, max_len=256, val_fraction=0.0, shard_size=3000, long_docs="split"
)


def _rows(root: Path) -> dict[int, list[list[int]]]:
    ds = open_dataset(root)
    return {L: ds.rows(L, np.arange(ds.num_rows(L))).tolist() for L in ds.bucket_lengths}


def _same_dataset(a: Path, b: Path, docs_too: bool = True) -> None:
    ra, rb = _rows(a), _rows(b)
    assert sum(len(v) for v in ra.values()) > 50  # vacuity guard
    assert ra == rb
    if docs_too:
        da = [d.tolist() for d in open_dataset(a).documents()]
        assert da == [d.tolist() for d in open_dataset(b).documents()]


@pytest.mark.parametrize(("dtype", "eos", "hi"), [(np.uint16, 3, 60_000), (np.int32, 7, 2**31 - 1)])
def test_several_prefixes_copied_equal_the_flat_token_file(
    tmp_path: Path, dtype: type, eos: int, hi: int
) -> None:
    docs_a = random_docs(150, seed=1, eos=eos, hi=hi)
    docs_b = random_docs(90, seed=2, eos=eos, hi=hi)
    assert any(len(d) > 1 for d in docs_a)  # multi-sequence documents
    assert any(not d or not sum(len(s) for s in d) for d in docs_a + docs_b)  # empty ones
    pa = write_megatron(tmp_path / "a", docs_a, dtype)
    pb = write_megatron(tmp_path / "b", docs_b, dtype)
    assert read_index(pa).dtype == np.dtype(dtype)
    man = prepare_megatron(MegatronConfig((str(pa), str(pb)), tmp_path / "meg", eos_id=eos, **KW))
    flat = flat_with_eos(docs_a + docs_b, eos).astype(np.uint32)
    prepare_tokens(TokensConfig(flat, tmp_path / "flat", eos_id=eos, **KW))
    _same_dataset(tmp_path / "meg", tmp_path / "flat")
    assert man["totals"]["documents"] == len(docs_a) + len(docs_b)
    assert man["inputs"]["eos_appended"] == sum(
        1 for d in docs_a + docs_b if not d or not sum(len(s) for s in d) or d[-1][-1] != eos
    )
    assert man["dtype"] == ("uint16" if dtype == np.uint16 else "uint32")
    verify_dataset(tmp_path / "meg")


def test_documents_match_megatron_cores_own_reader(tmp_path: Path) -> None:
    mod = pytest.importorskip("megatron.core.datasets.indexed_dataset")
    docs = random_docs(60, seed=3, eos=3, hi=60_000)
    prefix = write_megatron(tmp_path / "m", docs, np.uint16)
    theirs = mod.IndexedDataset(str(prefix))
    ours = read_index(prefix)
    tokens = np.fromfile(ours.bin_path, dtype=np.uint16)
    di = theirs.document_indices
    assert ours.documents == len(di) - 1 == len(docs)
    for i in range(ours.documents):
        seqs = [theirs[j] for j in range(int(di[i]), int(di[i + 1]))]
        want = np.concatenate(seqs) if seqs else np.zeros(0, dtype=np.uint16)
        got = tokens[ours.bounds[i] : ours.bounds[i + 1]]
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", [np.uint16, np.int32])
def test_in_place_indexes_the_bin_and_equals_the_flat_file(tmp_path: Path, dtype: type) -> None:
    docs = random_docs(200, seed=4, eos=5, hi=60_000, ends_with_eos=1.0)
    prefix = write_megatron(tmp_path / "m", docs, dtype)
    man = prepare_megatron(
        MegatronConfig((str(prefix),), tmp_path / "inp", eos_id=5, in_place=True, **KW)
    )
    assert man["tokens_file"]["path"] == str(Path(f"{prefix}.bin").resolve())
    assert man["tokens_file"]["source_dtype"] == np.dtype(dtype).name
    assert not list((tmp_path / "inp").rglob("*.tokens.bin"))
    empty = sum(1 for d in docs if not d or not sum(len(s) for s in d))
    assert empty > 0
    assert man["dropped"]["ingest"]["skipped"] == {"empty_document": empty}
    flat = flat_with_eos(docs, 5).astype(np.uint16)
    prepare_tokens(TokensConfig(flat, tmp_path / "flat", eos_id=5, **KW))
    _same_dataset(tmp_path / "inp", tmp_path / "flat", docs_too=False)
    got = [d.tolist() for d in open_dataset(tmp_path / "inp").documents()]
    assert got == [d.tolist() for d in open_dataset(tmp_path / "flat").documents() if d.size > 1]
    verify_dataset(tmp_path / "inp")
    assert main(["verify", str(tmp_path / "inp")]) == 0


def test_in_place_is_refused_after_the_bin_changes(tmp_path: Path) -> None:
    docs = random_docs(80, seed=5, eos=5, hi=60_000, ends_with_eos=1.0)
    prefix = write_megatron(tmp_path / "m", docs, np.uint16)
    cfg = MegatronConfig((str(prefix),), tmp_path / "inp", eos_id=5, in_place=True, **KW)
    prepare_megatron(cfg)
    open_dataset(tmp_path / "inp")
    bin_path = Path(f"{prefix}.bin")
    data = np.fromfile(bin_path, np.uint16)
    data[100] ^= 1
    data.tofile(bin_path)  # same size
    with pytest.raises(DataError, match=rf"{bin_path}: changed since the dataset indexed it"):
        open_dataset(tmp_path / "inp")


def test_in_place_refusals(tmp_path: Path) -> None:
    no_eos = write_megatron(tmp_path / "n", random_docs(40, seed=6, eos=5, hi=60_000), np.uint16)
    with pytest.raises(UserError, match=r"n\.bin: \d+ of 40 documents do not end with --eos-id 5"):
        prepare_megatron(MegatronConfig((str(no_eos),), tmp_path / "x", eos_id=5, in_place=True))
    with pytest.raises(UserError, match=r"n\.bin is the same file as .*n\.bin \(given twice"):
        prepare_megatron(
            MegatronConfig((str(no_eos), str(no_eos)), tmp_path / "y", eos_id=5, in_place=True)
        )
    i64 = write_megatron(tmp_path / "w", random_docs(10, 7, 5, 60_000, 1.0), np.int64)
    with pytest.raises(UserError, match=r"w\.bin: --in-place reads uint16 or int32 .* int64"):
        prepare_megatron(MegatronConfig((str(i64),), tmp_path / "z", eos_id=5, in_place=True))
    assert not any((tmp_path / d).exists() for d in ("x", "y", "z"))


def test_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    docs = random_docs(100, seed=8, eos=3, hi=60_000)
    prefix = write_megatron(tmp_path / "m", docs, np.uint16)
    out = tmp_path / "d"
    argv = ["prepare", "--from-megatron", str(prefix), "--out", str(out), "--eos-id", "3",
            "--min-len", "8", "--max-len", "256", "--workers", "2", "--quiet"]  # fmt: skip
    assert main(argv) == 0
    assert f"{out}: 100 documents" in capsys.readouterr().out
    assert main(["prepare", "--from-megatron", str(prefix), "--out", str(tmp_path / "e")]) == 2
    assert "--from-megatron needs --eos-id" in capsys.readouterr().err


def test_source_per_input_names_each_rows_prefix(tmp_path: Path) -> None:
    from ddecomp import VSLLoader
    from ddecomp.data.sources import source_names

    a = random_docs(60, seed=9, eos=3, hi=30_000)
    b = [[s + 30_000 * (s != 3) for s in d] for d in random_docs(60, seed=10, eos=3, hi=30_000)]
    pa, pb = (
        write_megatron(tmp_path / "web", a, np.uint16),
        write_megatron(tmp_path / "code", b, np.uint16),
    )
    kw = {**KW, "tails": "pack"}
    man = prepare_megatron(
        MegatronConfig((str(pa), str(pb)), tmp_path / "d", eos_id=3, source_per_input=True, **kw)
    )
    assert man["sources"]["names"] == ["web", "code"]
    assert man["sources"]["shards"] == sorted(man["sources"]["shards"])
    ds = open_dataset(tmp_path / "d")
    assert source_names(ds) == ["web", "code"]
    loader = VSLLoader(ds, tokens_per_step=512, seed=0)
    seen, packed = np.zeros(2, dtype=np.int64), 0
    for batch in loader:
        packed += int("cu_seqlens" in batch)
        for row, s in zip(batch["input_ids"].numpy(), batch["source"].tolist(), strict=True):
            real = row[row != 3]
            assert real.size
            assert ((real >= 30_000) == bool(s)).all()
            seen[s] += 1
    assert (seen > 10).all()
    assert packed > 0  # tail rows checked too
    verify_dataset(tmp_path / "d")
    assert "sources" not in prepare_megatron(
        MegatronConfig((str(pa), str(pb)), tmp_path / "n", eos_id=3, **KW)
    )
