"""Token files read as they are (issue 22, items 4, 5 and 14): byte order, a changed in-place
file, a file truncated while a job maps it. Each is one line naming the file, never wrong tokens
served and never a SIGBUS."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ddecomp import DataError, TokensConfig, UserError, open_dataset, prepare_tokens
from ddecomp.cli import main
from ddecomp.data.verify import verify_dataset
from tests._fixtures import EOS, identity_tokens, random_lengths, truncate_while_in_use

KW: dict[str, Any] = dict(min_len=16, max_len=512, val_fraction=0.1, shard_size=20_000)


def _docs(root: Path) -> list[list[int]]:
    out = []
    for split in ("train", "val"):
        out += [d.tolist() for d in open_dataset(root, split).documents()]
    return out


# ---- item 4: big-endian .npy ------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [">u2", ">i4"])
def test_a_big_endian_npy_is_read_in_its_byte_order(tmp_path: Path, dtype: str) -> None:
    eos = 3 if dtype == ">u2" else EOS
    lengths = random_lengths(200, seed=4, hi=600)
    toks = identity_tokens(lengths, eos=eos)
    if dtype == ">u2":  # ids below 2**16 that change when byte-swapped
        toks = np.where(toks == eos, eos, toks % 60_000 + 300)
    npy = tmp_path / "be.npy"
    np.save(npy, toks.astype(dtype))
    assert np.load(npy).dtype.str == dtype
    plain = tmp_path / "le.npy"
    np.save(plain, toks.astype(dtype.replace(">", "<")))
    prepare_tokens(TokensConfig(npy, tmp_path / "be", eos_id=eos, **KW))
    prepare_tokens(TokensConfig(plain, tmp_path / "le", eos_id=eos, **KW))
    got, want = _docs(tmp_path / "be"), _docs(tmp_path / "le")
    assert len(want) > 100  # vacuity guard
    assert got == want
    flat = np.concatenate([np.asarray(d) for d in got])
    assert sorted(flat.tolist()) == sorted(toks.astype(np.int64).tolist())
    verify_dataset(tmp_path / "be")


def test_a_big_endian_npy_in_place_is_refused_in_one_line(tmp_path: Path) -> None:
    toks = identity_tokens(random_lengths(50, seed=1, hi=400), eos=7) % 50_000
    toks[toks == 7 % 50_000] = 7
    npy = tmp_path / "be.npy"
    np.save(npy, toks.astype(">u2"))
    with pytest.raises(UserError, match=r"be\.npy: big-endian .* drop --in-place") as e:
        prepare_tokens(TokensConfig(npy, tmp_path / "inp", eos_id=7, in_place=True, **KW))
    assert "\n" not in str(e.value)
    assert not (tmp_path / "inp").exists()


def _in_place(tmp_path: Path, npy: bool = False) -> tuple[Path, Path]:
    toks = identity_tokens(random_lengths(300, seed=2, hi=3000))
    src = tmp_path / "data" / ("tokens.npy" if npy else "tokens.bin")
    src.parent.mkdir()
    if npy:
        np.save(src, toks)
    else:
        toks.tofile(src)
    kw = {**KW, "dtype": None if npy else "uint32"}
    prepare_tokens(TokensConfig(src, tmp_path / "inp", eos_id=EOS, in_place=True, **kw))
    return src, tmp_path / "inp"


def _rewrite_keeping_stamp(path: Path, at: int, data: bytes) -> None:
    """Overwrite bytes in place (same inode, same size), then restore the modification time."""
    st = path.stat()
    with open(path, "r+b") as fh:
        fh.seek(at)
        fh.write(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_an_in_place_npy_header_flipped_to_big_endian_is_caught(tmp_path: Path) -> None:
    src, root = _in_place(tmp_path, npy=True)
    head = src.read_bytes()[:128]
    assert b"'<u4'" in head
    _rewrite_keeping_stamp(src, head.index(b"'<u4'"), b"'>u4'")  # same size, inode, mtime
    assert np.load(src).dtype.str == ">u4"
    with pytest.raises(DataError, match=rf"{src}: its \.npy header changed"):
        open_dataset(root)
    with pytest.raises(DataError, match=rf"{src}: its \.npy header changed"):
        verify_dataset(root)


# ---- item 5: an in-place file changed with the same size --------------------------------------
def test_an_in_place_file_changed_with_the_same_size_is_refused_at_open(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src, root = _in_place(tmp_path)
    open_dataset(root)
    data = np.fromfile(src, np.uint32)
    data[5000] += 1
    data.tofile(src)  # same size, same inode, a new modification time
    with pytest.raises(DataError, match=rf"{src}: changed since the dataset indexed it"):
        open_dataset(root)
    for argv in (["stats", str(root)], ["train", str(root), "--out", str(tmp_path / "run")]):
        assert main(argv) == 1, argv
        err = capsys.readouterr().err.strip()
        assert str(src) in err, (argv, err)
        assert "changed since" in err, (argv, err)
        assert "\n" not in err


def test_an_in_place_file_replaced_by_a_copy_with_its_stamp_is_refused(tmp_path: Path) -> None:
    src, root = _in_place(tmp_path)
    copy = src.with_name("copy.bin")
    shutil.copy2(src, copy)  # same bytes, size and mtime: a new inode
    os.replace(copy, src)
    with pytest.raises(DataError, match=rf"{src}: changed since the dataset indexed it"):
        open_dataset(root)


def test_the_remaining_limit_an_edit_restoring_the_stamp_is_caught_by_verify(
    tmp_path: Path,
) -> None:
    src, root = _in_place(tmp_path)
    _rewrite_keeping_stamp(src, 4 * 5000, np.uint32(123).tobytes())
    open_dataset(root)  # size, mtime_ns and inode all as recorded: only verify reads the bytes
    with pytest.raises(DataError, match=rf"{src}: tokens .* differ"):
        verify_dataset(root)


# ---- item 14: truncated while mapped ----------------------------------------------------------
def test_an_in_place_file_truncated_under_an_open_dataset_is_one_line_not_sigbus(
    tmp_path: Path,
) -> None:
    src, root = _in_place(tmp_path)
    line = truncate_while_in_use(root, src, bucket=-1)  # the read was a SIGBUS before the fix
    assert line.startswith(f"DataError: {src}: truncated to 4096 bytes while in use")


def test_a_truncated_in_place_file_is_checked_before_mapping(tmp_path: Path) -> None:
    src, root = _in_place(tmp_path)
    from ddecomp.data.layout import load_manifest
    from ddecomp.data.tokenfile import token_array

    man = load_manifest(root)
    os.truncate(src, 4096)  # after open's checks, before a shard is mapped
    with pytest.raises(DataError, match=rf"{src}: 4096 bytes, the dataset indexed"):
        token_array(root, man, man["shards"][-1])
