"""A dataset indexing several token files in place (``--from-tokens F1 F2 --in-place``): the
second file edited, truncated or removed is refused in one line naming it (at open, while in
use, and by ``verify``), and a forged ``file`` index or a manifest an older reader would see
without its ``tokens_files`` is refused by validation. Each check was seen failing with the
guard and the open checking only the first file."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ddecomp import DataError, TokensConfig, UserError, open_dataset, prepare_tokens
from ddecomp.cli import main
from ddecomp.data.layout import check_manifest, fingerprint, load_manifest
from ddecomp.data.verify import verify_dataset
from tests._fixtures import EOS, identity_tokens, random_lengths, run_python, truncate_while_in_use

KW: dict[str, Any] = dict(min_len=16, max_len=512, val_fraction=0.1, shard_size=20_000)


def _two_files(tmp_path: Path) -> tuple[Path, Path, Path]:
    """Two uint32 token files indexed in place into one dataset; (first, second, dataset)."""
    (tmp_path / "data").mkdir()
    paths = []
    for k in range(2):
        toks = identity_tokens(random_lengths(200, seed=20 + k, hi=3000))
        path = tmp_path / "data" / f"part{k}.bin"
        toks.tofile(path)
        paths.append(path)
    root = tmp_path / "inp"
    prepare_tokens(
        TokensConfig(tuple(paths), root, eos_id=EOS, dtype="uint32", in_place=True, **KW)
    )
    rows = sum(open_dataset(root).num_rows(L) for L in open_dataset(root).bucket_lengths)
    assert rows > 100  # vacuity guard
    return paths[0], paths[1], root


def _one_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == 1, argv
    err = capsys.readouterr().err.strip()
    assert "\n" not in err, err
    return err


def test_the_second_file_edited_is_refused_at_open_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, second, root = _two_files(tmp_path)
    data = np.fromfile(second, np.uint32)
    data[100] += 1
    data.tofile(second)  # same size, a new modification time
    with pytest.raises(DataError, match=rf"{second}: changed since the dataset indexed it"):
        open_dataset(root)
    err = _one_line(["stats", str(root)], capsys)
    assert str(second) in err
    assert "changed since" in err


def test_the_second_file_removed_is_refused_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, second, root = _two_files(tmp_path)
    second.unlink()
    with pytest.raises(DataError, match=rf"{second}: the token file .* is missing"):
        open_dataset(root)
    err = _one_line(["verify", str(root)], capsys)
    assert str(second) in err


def test_the_second_file_truncated_while_in_use_is_one_line(tmp_path: Path) -> None:
    _, second, root = _two_files(tmp_path)
    line = truncate_while_in_use(root, second, bucket=0)
    assert line.startswith(f"DataError: {second}: truncated to 4096 bytes while in use")


def test_verify_hashes_each_range_against_its_own_file(tmp_path: Path) -> None:
    first, second, root = _two_files(tmp_path)
    verify_dataset(root)
    st = second.stat()
    with open(second, "r+b") as fh:  # same size and inode, the modification time restored
        fh.seek(4 * 3000)
        fh.write(np.uint32(123).tobytes())
    os.utime(second, ns=(st.st_atime_ns, st.st_mtime_ns))
    open_dataset(root)  # the stamp is as recorded: only verify reads the bytes
    with pytest.raises(DataError, match=rf"{second}: tokens .* differ"):
        verify_dataset(root)
    assert str(first) != str(second)


def _manifest(root: Path) -> dict[str, Any]:
    man: dict[str, Any] = json.loads((root / "manifest.json").read_text())
    return man


def test_a_file_index_out_of_range_is_refused(tmp_path: Path) -> None:
    _, _, root = _two_files(tmp_path)
    man = _manifest(root)
    check_manifest(man, root / "manifest.json")
    man["shards"][-1]["files"]["tokens"]["file"] = 2
    with pytest.raises(DataError, match=r"shards\[\d+\]\.files\.tokens\.file = 2 is outside"):
        check_manifest(man, root / "manifest.json")
    man["shards"][-1]["files"]["tokens"]["file"] = -1
    with pytest.raises(DataError, match=r"\.file = -1 is outside"):
        check_manifest(man, root / "manifest.json")
    del man["shards"][-1]["files"]["tokens"]["file"]
    with pytest.raises(DataError, match=r"\.file"):  # several files: each range names its own
        check_manifest(man, root / "manifest.json")


def test_a_reader_that_does_not_know_tokens_files_refuses_the_ranges(tmp_path: Path) -> None:
    """What a ddecomp without ``tokens_files`` sees: shards with an offset and no file to read
    them from, which its validation refuses (it never serves other bytes)."""
    _, _, root = _two_files(tmp_path)
    man = _manifest(root)
    assert man["version"] == 3  # an older ddecomp (reads 1 and 2) stops at the version ...
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("ddecomp.data.layout.READ_VERSIONS", (1, 2))
        with pytest.raises(UserError, match="format version 3 is not supported"):
            load_manifest(root)
    del man["tokens_files"]  # ... and one that ignored it would still refuse the offsets
    man["version"] = 1
    man["fingerprint"] = fingerprint(man)
    with pytest.raises(DataError, match="offset is set, but the manifest has no tokens_file"):
        check_manifest(man, root / "manifest.json")
    both = _manifest(root)
    both["tokens_file"] = both["tokens_files"][0]
    with pytest.raises(DataError, match="tokens_files is set with tokens_file"):
        check_manifest(both, root / "manifest.json")


_TOUCHED = """
import json, os, sys
import numpy as np
from ddecomp import DataError, open_dataset
ds = open_dataset({root!r})
man = json.load(open(os.path.join({root!r}, "manifest.json")))
file_of = np.array([sh["files"]["tokens"]["file"] for sh in man["shards"]])
L = ds.bucket_lengths[0]
starts = ds.row_starts(L)
shard = np.searchsorted(ds.token_base, starts, side="right") - 1
first = np.flatnonzero(file_of[shard] == 0)
second = np.flatnonzero(file_of[shard] == 1)
assert first.size > 10 and second.size > 10, (first.size, second.size)
want = ds.rows(L, first)
os.truncate({second_path!r}, 4096)
assert np.array_equal(ds.rows(L, first), want)  # rows of the first file: unaffected
print("first file read", first.size)
try:
    ds.rows(L, second)
except DataError as e:
    print("DataError:", e)
    sys.exit(3)
"""


def test_a_read_checks_the_files_its_rows_come_from(tmp_path: Path) -> None:
    """Each read re-checks the in-place files its rows are ranges of, not every file: rows of the
    first file are still served (rightly) after the second is truncated, and a read of the
    second's rows is the one line; a step's cost does not grow with files it does not touch."""
    _, second, root = _two_files(tmp_path)
    script = _TOUCHED.format(root=str(root), second_path=str(second))
    r = run_python("-c", script)
    assert r.returncode == 3, (r.returncode, r.stdout, r.stderr[-2000:])
    out = r.stdout.strip().splitlines()
    assert out[0].startswith("first file read")
    assert out[1].startswith(f"DataError: {second}: truncated to 4096 bytes while in use")
