"""``--from-tokens FILE --in-place``: the dataset indexes FILE where it is, writes no token."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ddecomp import DataError, TokensConfig, UserError, open_dataset, prepare_tokens
from ddecomp.cli import main
from ddecomp.data.verify import verify_dataset
from tests._fixtures import EOS, identity_tokens, random_lengths

KW: dict[str, Any] = dict(eos_id=EOS, dtype="uint32", min_len=16, max_len=512, val_fraction=0.1,
          shard_size=20_000)  # fmt: skip


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    src = tmp_path / "data" / "tokens.bin"
    src.parent.mkdir()
    identity_tokens(random_lengths(300, seed=2, hi=3000)).tofile(src)
    return src


def test_in_place_has_the_copied_datasets_rows_and_writes_no_token(
    tmp_path: Path, token_file: Path
) -> None:
    copied = prepare_tokens(TokensConfig(token_file, tmp_path / "copy", **KW))
    man = prepare_tokens(TokensConfig(token_file, tmp_path / "inp", in_place=True, **KW))
    assert man["totals"] == copied["totals"]
    assert man["tokens_file"]["path"] == str(token_file.resolve())
    assert man["tokens_file"]["bytes"] == token_file.stat().st_size
    assert not list((tmp_path / "inp").rglob("*.tokens.bin"))  # only the index is written
    assert list((tmp_path / "inp").rglob("*.docs.npy"))
    for split in ("train", "val"):
        a, b = open_dataset(tmp_path / "copy", split), open_dataset(tmp_path / "inp", split)
        assert a.bucket_rows == b.bucket_rows
        n = 0
        for L in a.bucket_lengths:
            idx = np.arange(a.num_rows(L))
            np.testing.assert_array_equal(a.rows(L, idx), b.rows(L, idx))
            n += idx.size
        assert n > 10  # vacuity guard
        assert [d.tolist() for d in a.documents()] == [d.tolist() for d in b.documents()]
    assert verify_dataset(tmp_path / "inp")["shards"] == man["totals"]["shards"]
    assert main(["verify", str(tmp_path / "inp")]) == 0


def test_a_moved_or_changed_file_is_a_one_line_error_naming_it(
    tmp_path: Path, token_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    man = prepare_tokens(TokensConfig(token_file, tmp_path / "inp", in_place=True, **KW))
    moved = token_file.with_name("moved.bin")
    shutil.move(token_file, moved)
    with pytest.raises(DataError, match=rf"{token_file}: the token file .* missing"):
        open_dataset(tmp_path / "inp")
    assert main(["verify", str(tmp_path / "inp")]) == 1
    err = capsys.readouterr().err.strip()
    assert str(token_file) in err
    assert "\n" not in err
    # back, but one token changed (same size): verify names the file
    data = np.fromfile(moved, np.uint32)
    data[5000] += 1
    data.tofile(token_file)
    with pytest.raises(DataError, match=rf"{token_file}: changed since the dataset indexed it"):
        open_dataset(tmp_path / "inp")  # a new modification time (and inode: a new file)
    assert man["tokens_file"]["bytes"] == token_file.stat().st_size
    with pytest.raises(DataError, match=rf"{token_file}: changed since"):  # (a new inode)
        verify_dataset(tmp_path / "inp")
    data[:10].tofile(token_file)  # truncated
    with pytest.raises(DataError, match=rf"{token_file}: 40 bytes, the dataset indexed"):
        open_dataset(tmp_path / "inp")


def test_in_place_refusals(tmp_path: Path, token_file: Path) -> None:
    as_int32 = tmp_path / "t32.npy"
    np.save(as_int32, np.fromfile(token_file, np.uint32).astype(np.int32))
    kw = {**KW, "dtype": None}
    with pytest.raises(UserError, match=r"--in-place reads the file .* this one is int32"):
        prepare_tokens(TokensConfig(as_int32, tmp_path / "a", in_place=True, **kw))
    with pytest.raises(UserError, match=r"needs a token file"):
        prepare_tokens(TokensConfig(np.fromfile(token_file, np.uint32), tmp_path / "b",
                                    in_place=True, **kw))  # fmt: skip
    with pytest.raises(UserError, match="cannot go with --out URL"):
        prepare_tokens(TokensConfig(token_file, "s3://bucket/x", in_place=True, **KW))  # type: ignore[arg-type]
    assert not (tmp_path / "a").exists()


def test_an_npy_file_in_place_skips_its_header(tmp_path: Path, token_file: Path) -> None:
    npy = tmp_path / "t.npy"
    np.save(npy, np.fromfile(token_file, np.uint32))
    man = prepare_tokens(
        TokensConfig(npy, tmp_path / "inp", in_place=True, **{**KW, "dtype": None})
    )
    assert man["tokens_file"]["header"] > 0
    copied = prepare_tokens(TokensConfig(token_file, tmp_path / "copy", **KW))
    a, b = open_dataset(tmp_path / "copy"), open_dataset(tmp_path / "inp")
    L = a.bucket_lengths[-1]
    np.testing.assert_array_equal(a.rows(L, [0, 1]), b.rows(L, [0, 1]))
    assert json.loads((tmp_path / "inp" / "manifest.json").read_text())["dtype"] == "uint32"
    assert copied["totals"] == man["totals"]
