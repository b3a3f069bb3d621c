"""Malformed or truncated Megatron ``.idx`` / ``.bin`` pairs: one line naming the file, nothing
written (``prepare --from-megatron``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from ddecomp import UserError
from ddecomp.cli import main
from ddecomp.preparing.config import MegatronConfig
from ddecomp.preparing.megatron import prepare_megatron
from tests.preparing._megatron import random_docs, write_megatron

pytest.importorskip("megatron.core.datasets.indexed_dataset")


def _cut(path: Path, n: int) -> None:
    path.write_bytes(path.read_bytes()[:n])


def _poke(path: Path, at: int, data: bytes) -> None:
    b = bytearray(path.read_bytes())
    b[at : at + len(data)] = data
    path.write_bytes(bytes(b))


DAMAGE: dict[str, tuple[str, Callable[[Path], object], str]] = {
    "idx truncated": ("idx", lambda p: _cut(p, p.stat().st_size - 8), r"its header .* needs"),
    "idx header cut": ("idx", lambda p: _cut(p, 20), r"shorter than a Megatron index header"),
    "idx empty": ("idx", lambda p: _cut(p, 0), r"0 bytes, shorter than"),
    "idx magic": ("idx", lambda p: _poke(p, 0, b"XXIDIDX"), r"not a Megatron index"),
    "idx version": ("idx", lambda p: _poke(p, 9, b"\x02"), r"version 2"),
    "idx float dtype": ("idx", lambda p: _poke(p, 17, b"\x06"), r"float64\) is not an integer"),
    "idx huge count": ("idx", lambda p: _poke(p, 18, b"\xff" * 8), r"truncated or malformed"),
    "idx pointer": ("idx", lambda p: _poke(p, 34 + 4 * 5 + 8, b"\x01"), r"not back to back"),
    "bin truncated": ("bin", lambda p: _cut(p, p.stat().st_size - 2), r"truncated or not this"),
    "bin longer": ("bin", lambda p: p.write_bytes(p.read_bytes() + b"\0\0"), r"not this index"),
    "bin missing": ("bin", lambda p: p.unlink(), r"no such file"),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_a_damaged_pair_is_one_line_naming_the_file(
    tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    which, damage, message = DAMAGE[case]
    prefix = write_megatron(tmp_path / "m", random_docs(20, seed=1, eos=3, hi=60_000), np.uint16)
    path = Path(f"{prefix}.{which}")
    damage(path)
    for in_place in (False, True):
        with pytest.raises(UserError, match=message) as e:
            prepare_megatron(
                MegatronConfig((str(prefix),), tmp_path / "out", eos_id=3, in_place=in_place)
            )
        assert str(path) in str(e.value)
    out = str(tmp_path / "o")
    argv = ["prepare", "--from-megatron", str(prefix), "--eos-id", "3", "--out", out]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert str(path) in err
    assert "\n" not in err
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "o").exists()


def test_sequences_outside_any_document_are_refused(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    mod = pytest.importorskip("megatron.core.datasets.indexed_dataset")
    b = mod.IndexedDatasetBuilder(str(tmp_path / "m.bin"), dtype=np.uint16)
    b.add_item(torch.tensor([5, 6, 3]))
    b.end_document()
    b.add_item(torch.tensor([7, 8]))  # no end_document
    b.finalize(str(tmp_path / "m.idx"))
    with pytest.raises(UserError, match=r"m\.idx: the document index does not rise"):
        prepare_megatron(MegatronConfig((str(tmp_path / "m"),), tmp_path / "o", eos_id=3))


@pytest.mark.parametrize(
    ("forge", "message"),
    [
        (lambda s: s.update(shards=[5] * len(s["shards"])), r"sources\.shards holds an index"),
        (lambda s: s.update(shards=s["shards"][:-1]), r"sources needs names"),
        (lambda s: s.update(names=[]), r"sources needs names"),
    ],
)
def test_a_forged_source_record_is_refused(
    tmp_path: Path, forge: Callable[[dict], object], message: str
) -> None:
    import json

    from ddecomp import DataError, open_dataset
    from ddecomp.data.layout import fingerprint

    pa = write_megatron(tmp_path / "a", random_docs(30, seed=1, eos=3, hi=60_000), np.uint16)
    pb = write_megatron(tmp_path / "b", random_docs(30, seed=2, eos=3, hi=60_000), np.uint16)
    cfg = MegatronConfig((str(pa), str(pb)), tmp_path / "d", eos_id=3, min_len=8, max_len=64,
                         source_per_input=True)  # fmt: skip
    man = prepare_megatron(cfg)
    forge(man["sources"])
    man["fingerprint"] = fingerprint(man)
    (tmp_path / "d" / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(DataError, match=message):
        open_dataset(tmp_path / "d")


def test_several_prefixes_in_place_name_the_changed_bin(tmp_path: Path) -> None:
    """Issue 21: two prefixes indexed in place; the second ``.bin`` edited (same size) or
    removed is refused at open in one line naming it, and int32 next to uint16 is refused at
    prepare (one dataset dtype)."""
    from ddecomp import DataError, open_dataset

    docs = [random_docs(60, seed=50 + k, eos=3, hi=30_000, ends_with_eos=1.0) for k in range(2)]
    prefixes = [str(write_megatron(tmp_path / f"m{k}", d, np.uint16)) for k, d in enumerate(docs)]
    cfg = MegatronConfig(tuple(prefixes), tmp_path / "d", eos_id=3, in_place=True, min_len=8)
    prepare_megatron(cfg)
    open_dataset(tmp_path / "d")
    second = Path(f"{prefixes[1]}.bin").resolve()
    data = np.fromfile(second, np.uint16)
    data[10] ^= 1
    data.tofile(second)
    with pytest.raises(DataError, match=rf"^{second}: changed since the dataset indexed it") as e:
        open_dataset(tmp_path / "d")
    assert "\n" not in str(e.value)
    second.unlink()
    with pytest.raises(DataError, match=rf"^{second}: the token file .* is missing"):
        open_dataset(tmp_path / "d")
    wide = str(write_megatron(tmp_path / "w", docs[0], np.int32))
    with pytest.raises(UserError, match=r"w\.bin: int32 tokens, .*m0\.bin uint16: --in-place"):
        prepare_megatron(
            MegatronConfig((prefixes[0], wide), tmp_path / "x", eos_id=3, in_place=True)
        )
    assert not (tmp_path / "x").exists()
