"""A dataset that cannot lie: a forged manifest or a damaged file is refused with one line.

Forged manifests are *consistent*: fields edited, then the fingerprint recomputed (and a file's
size and sha256 too where a file changes), so only ``open_dataset``'s and ``verify``'s own
validation can catch them. A hang becomes a failure through a SIGALRM deadline; an out-of-directory
read is caught by an audit hook that records every file opened during the call.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from ddecomp import DataError, TokensConfig, UserError, open_dataset, prepare_tokens
from ddecomp.data.dataset import Dataset
from ddecomp.data.layout import MANIFEST, fingerprint
from ddecomp.data.stats import compute_stats
from ddecomp.data.verify import verify_dataset
from tests._fixtures import EOS, SRC, identity_tokens, random_lengths, run_python


# ---- harness ----------------------------------------------------------------------------------
class Hung(Exception):
    """The call under test did not return within its deadline."""


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Turn a hang into a :class:`Hung` exception (SIGALRM; tests run in the main thread)."""

    def fire(signum: int, frame: Any) -> None:
        raise Hung(f"no answer within {seconds} s")

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


_WATCHED: list[Path] = []  # the dataset root while a call is watched; empty otherwise
_OPENED_OUTSIDE: list[str] = []
_ALLOWED = tuple({Path(p).resolve() for p in (sys.prefix, sys.base_prefix, SRC)})


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if not _WATCHED or event != "open" or not isinstance(args[0], str | bytes | os.PathLike):
        return
    real = Path(os.fsdecode(args[0])).resolve()
    if not real.is_relative_to(_WATCHED[0]) and not any(real.is_relative_to(a) for a in _ALLOWED):
        _OPENED_OUTSIDE.append(str(real))


sys.addaudithook(_audit)  # cannot be removed; costs one list test per event while unwatched


@contextlib.contextmanager
def watch(root: Path) -> Iterator[list[str]]:
    """Record files opened outside ``root`` (and outside Python's own trees) during the block."""
    _OPENED_OUTSIDE.clear()
    _WATCHED.append(root.resolve())
    try:
        yield _OPENED_OUTSIDE
    finally:
        _WATCHED.clear()


def _one_line(e: BaseException) -> str:
    msg = str(e)
    assert msg
    assert "\n" not in msg, f"not one line: {msg!r}"
    return msg


def _build(root: Path, lengths: np.ndarray, **kw: Any) -> Path:
    toks = kw.pop("tokens", None)
    toks = identity_tokens(lengths) if toks is None else toks
    args = {"min_len": 16, "max_len": 256, "val_fraction": 0.1, "shard_size": 8_000, **kw}
    prepare_tokens(TokensConfig(toks, root, args.pop("eos", EOS), **args))
    return root


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build(tmp_path_factory.mktemp("faults") / "ds", random_lengths(90, seed=5, hi=1200))


def _copy(good: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(good, tmp_path / "ds"))


def _manifest(ds: Path) -> dict[str, Any]:
    man: dict[str, Any] = json.loads((ds / MANIFEST).read_text())
    return man


def _forge(ds: Path, edit: Callable[[Any], Any]) -> None:
    """Edit the manifest and recompute its fingerprint, so the fingerprint cannot catch it."""
    man = _manifest(ds)
    man = edit(man) or man
    if isinstance(man, dict) and "fingerprint" in man:
        man["fingerprint"] = fingerprint(man)
    (ds / MANIFEST).write_text(json.dumps(man))


def _refused(call: Callable[[], Any], root: Path, match: str | None = None) -> str:
    """``call`` raises UserError/DataError with one line (matching ``match``), reads nothing
    outside ``root`` and returns within its deadline."""
    with (
        watch(root) as outside,
        deadline(20),
        pytest.raises((UserError, DataError), match=match) as info,
    ):
        call()
    assert outside == []
    return _one_line(info.value)


def _rec(man: dict[str, Any], shard: int = 0, kind: str = "tokens") -> dict[str, Any]:
    rec: dict[str, Any] = man["shards"][shard]["files"][kind]
    return rec


# ---- 3: paths that leave the dataset ----------------------------------------------------------
@pytest.mark.parametrize("how", ["parent", "absolute", "other_shard", "nested"])
def test_manifest_path_outside_the_dataset_is_refused(good: Path, tmp_path: Path, how: str) -> None:
    ds = _copy(good, tmp_path)
    outside = tmp_path / "outside.bin"
    outside.write_bytes((ds / "shards" / "00000.tokens.bin").read_bytes()[::-1])
    target = {
        "parent": "../outside.bin",
        "absolute": str(outside),
        "other_shard": "shards/00000.tokens.bin",  # shard 1 served shard 0's tokens
        "nested": "shards/../../outside.bin",
    }[how]
    real = ds / target if not target.startswith("/") else Path(target)
    data = real.read_bytes()

    def edit(man: dict[str, Any]) -> None:
        shard = 1 if how == "other_shard" else 0
        _rec(man, shard)["path"] = target
        _rec(man, shard)["bytes"] = len(data)
        _rec(man, shard)["sha256"] = hashlib.sha256(data).hexdigest()
        man["shards"][shard]["tokens"] = len(data) // 4

    _forge(ds, edit)
    for split in ("train", "val"):
        _refused(lambda: open_dataset(ds, split), ds, "path|outside|expected")  # noqa: B023
    _refused(lambda: verify_dataset(ds), ds, "path|outside|expected")


def test_symlink_that_leaves_the_dataset_is_refused(good: Path, tmp_path: Path) -> None:
    ds = _copy(good, tmp_path)
    f = ds / "shards" / "00000.tokens.bin"
    elsewhere = tmp_path / "elsewhere.bin"
    shutil.move(f, elsewhere)  # same bytes: size and sha256 still match the manifest
    f.symlink_to(elsewhere)
    msg = _refused(lambda: open_dataset(ds), ds, "symlink|outside")
    assert "00000.tokens.bin" in msg
    _refused(lambda: verify_dataset(ds), ds, "symlink|outside")


def test_symlink_inside_the_dataset_is_followed(good: Path, tmp_path: Path) -> None:
    ds = _copy(good, tmp_path)
    f = ds / "shards" / "00000.tokens.bin"
    shutil.move(f, ds / "moved.bin")
    f.symlink_to(ds / "moved.bin")
    assert verify_dataset(ds)["shards"] >= 2
    assert open_dataset(ds).bucket_lengths


# ---- 8: forged but consistent manifests --------------------------------------------------------
def _set(*keys: Any, value: Any) -> Callable[[Any], None]:
    def edit(man: Any) -> None:
        node = man
        for k in keys[:-1]:
            node = node[k]
        node[keys[-1]] = value

    return edit


def _del(*keys: Any) -> Callable[[Any], None]:
    def edit(man: Any) -> None:
        node = man
        for k in keys[:-1]:
            node = node[k]
        del node[keys[-1]]

    return edit


FORGERIES = {
    "min_len_0": (_set("min_len", value=0), "min_len"),
    "min_len_12": (_set("min_len", value=12), "min_len"),
    "max_len_above_limit": (_set("max_len", value=1 << 21), "max_len"),
    "min_above_max": (_set("min_len", value=512), "min_len"),
    "dtype_float16": (_set("dtype", value="float16"), "dtype"),
    "dtype_int8": (_set("dtype", value="int8"), "dtype"),
    "eos_not_below_vocab": (_set("tokenizer", "vocab_size", value=EOS), "eos_id"),
    "bos_not_below_vocab": (_set("tokenizer", "bos_id", value=EOS + 1), "bos_id"),
    "vocab_zero": (_set("tokenizer", "vocab_size", value=0), "vocab_size"),
    "shard_twice": (lambda m: m["shards"].append(copy.deepcopy(m["shards"][0])), "shard"),
    "shard_twice_renumbered": (
        lambda m: m["shards"].append({**copy.deepcopy(m["shards"][0]), "index": len(m["shards"])}),
        "shard",
    ),
    "tokens_size_lies": (_set("shards", 0, "tokens", value=10), "tokens"),
    "version_string": (_set("version", value="1"), "string"),
    "version_true": (_set("version", value=True), "boolean"),
    "manifest_is_a_list": (lambda m: [m], "manifest"),
    "shards_is_a_dict": (_set("shards", value={}), "shards"),
    "files_is_a_list": (_set("shards", 0, "files", value=[]), "files"),
    "bucket_key_not_a_length": (_set("shards", 0, "buckets", "train", "x", value={}), r"train\.x"),
    "split_missing": (_del("splits", "val"), "val"),
    "eos_missing": (_del("tokenizer", "eos_id"), "eos_id"),
    "dropped_not_a_dict": (_set("splits", "train", "dropped", value=3), "dropped"),
}


@pytest.mark.parametrize("name", sorted(FORGERIES))
def test_forged_manifest_is_refused_by_open_and_verify(
    good: Path, tmp_path: Path, name: str
) -> None:
    ds = _copy(good, tmp_path)
    edit, match = FORGERIES[name]
    _forge(ds, edit)
    _refused(lambda: open_dataset(ds), ds, match)
    _refused(lambda: verify_dataset(ds), ds, match)


def test_size_of_the_wrong_type_is_named_as_such(good: Path, tmp_path: Path) -> None:
    ds = _copy(good, tmp_path)
    _forge(ds, lambda m: _rec(m).update(bytes=str(_rec(m)["bytes"])))
    for call in (lambda: open_dataset(ds), lambda: verify_dataset(ds)):
        msg = _refused(call, ds, r"bytes")
        assert "is a string" in msg  # not "75264 bytes, manifest says 75264"


def test_version_string_is_not_called_unsupported_version_1(good: Path, tmp_path: Path) -> None:
    ds = _copy(good, tmp_path)
    _forge(ds, _set("version", value="1"))
    msg = _refused(lambda: verify_dataset(ds), ds)
    assert "reads version 1" not in msg
    assert "'1'" in msg


def test_ids_beyond_the_vocabulary_are_caught_by_verify(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    toks = rng.integers(3, 1000, size=20_000).astype(np.uint16)
    toks[rng.choice(toks.size, 300, replace=False)] = 2  # EOS
    ds = _build(tmp_path / "ds", np.zeros(0), tokens=toks, eos=2)
    assert verify_dataset(ds)["shards"] >= 2
    _forge(ds, _set("tokenizer", "vocab_size", value=500))  # EOS 2 < 500 < the largest id 999
    _refused(lambda: verify_dataset(ds), ds, r"id \d+, not below the tokenizer's vocab_size 500")


# ---- 9: out buffers that cannot hold the ids ---------------------------------------------------
@pytest.mark.parametrize("dtype", ["int8", "uint8", "int16", "float32", "float64", "bool"])
def test_rows_refuses_a_buffer_that_cannot_hold_the_ids(good: Path, dtype: str) -> None:
    ds = open_dataset(good)
    L = ds.bucket_lengths[-1]
    n = min(4, ds.num_rows(L))
    assert n > 0
    assert ds.vocab_size > 1 << 16  # ids an 8- or 16-bit buffer would wrap
    with pytest.raises(UserError, match="out has dtype"):
        ds.rows(L, np.arange(n), out=np.zeros((n, L + 1), dtype=dtype))
    want = ds.rows(L, np.arange(n))
    for fits in (np.int64, np.uint32, np.int32):  # int32 holds ids up to 2^31 - 1 = vocab - 1
        got = ds.rows(L, np.arange(n), out=np.zeros((n, L + 1), dtype=fits))
        assert np.array_equal(got, want)


def test_rows_refuses_an_out_buffer_of_the_wrong_shape(good: Path) -> None:
    ds = open_dataset(good)
    L = ds.bucket_lengths[0]
    with pytest.raises(UserError, match="shape"):
        ds.rows(L, [0, 1], out=np.zeros((2, L), dtype=np.int64))


# ---- 13: damaged files give one line pointing to verify ---------------------------------------
def _npy_with_header(path: Path, count: int) -> None:
    """Rewrite ``path`` (an int64 .npy) so its header claims ``count`` entries, data unchanged."""
    arr = np.load(path)
    import io

    buf = io.BytesIO()
    hdr = {"descr": "<i8", "fortran_order": False, "shape": (count,)}
    np.lib.format.write_array_header_1_0(buf, hdr)
    path.write_bytes(buf.getvalue() + arr.tobytes())


def test_npy_header_claiming_745_gib_is_refused_without_allocating(
    good: Path, tmp_path: Path
) -> None:
    ds = _copy(good, tmp_path)
    man = _manifest(ds)
    rec = man["shards"][0]["buckets"]["train"]["16"]
    f = ds / rec["path"]
    _npy_with_header(f, 100_000_000_000)  # 745 GiB of int64

    def edit(m: dict[str, Any]) -> None:
        r = m["shards"][0]["buckets"]["train"]["16"]
        r["bytes"], r["sha256"] = f.stat().st_size, hashlib.sha256(f.read_bytes()).hexdigest()

    _forge(ds, edit)
    for call in (lambda: open_dataset(ds), lambda: verify_dataset(ds)):
        assert f.name in _refused(call, ds, "header|entries")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return run_python("-m", "ddecomp", *args)


@pytest.mark.parametrize("damage", ["truncated_tokens", "missing_bucket", "missing_docs"])
def test_stats_and_plan_on_a_damaged_dataset_say_one_line_and_point_to_verify(
    good: Path, tmp_path: Path, damage: str
) -> None:
    ds = _copy(good, tmp_path)
    sh = ds / "shards"
    if damage == "truncated_tokens":
        f = sh / "00001.tokens.bin"
        f.write_bytes(f.read_bytes()[:-400])
    elif damage == "missing_bucket":
        next(sh.glob("00001.train.L*.npy")).unlink()
    else:
        (sh / "00001.docs.npy").unlink()
    for args in (["stats", str(ds)], ["plan", str(ds), "--tokens-per-step", "1024"]):
        r = _cli(*args)
        assert r.returncode == 1, r.stderr
        assert "Traceback" not in r.stderr
        assert r.stderr.strip().count("\n") == 0, r.stderr
        assert f"ddecomp verify {ds}" in r.stderr
        assert "00001." in r.stderr


def test_verify_on_a_manifest_of_the_wrong_shape_says_one_line(good: Path, tmp_path: Path) -> None:
    ds = _copy(good, tmp_path)
    _forge(ds, _set("shards", 0, "buckets", value=[1, 2]))
    r = _cli("verify", str(ds))
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr
    assert r.stderr.strip().count("\n") == 0
    assert "buckets" in r.stderr


def test_stats_into_a_closed_pipe_exits_quietly(good: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    cmd = [sys.executable, "-m", "ddecomp", "stats", str(good)]
    with subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True
    ) as p:
        assert p.stdout is not None
        assert p.stderr is not None
        p.stdout.close()  # the reader (`head`) is gone before anything is written
        err = p.stderr.read()
        code = p.wait(timeout=120)
    assert err == ""
    assert code == 128 + signal.SIGPIPE


# ---- the shard file list has one source ------------------------------------------------------
def test_shard_files_lists_every_file_a_shard_has(good: Path) -> None:
    from ddecomp.data.layout import shard_files

    man = _manifest(good)
    listed = {r["path"] for sh in man["shards"] for r in shard_files(sh)}
    on_disk = {
        f"shards/{p.name}" for p in (good / "shards").iterdir() if not p.name.endswith(".done.json")
    }
    assert len(on_disk) > 10
    assert listed == on_disk


# ---- the property: any mutation -> a result or one line, never a hang or another error ---------
ODD = [None, True, False, 0, -1, 1, 3, 12, 1 << 40, 1 << 64, 0.5, float("nan"), "", "1", "x",
       "float16", "uint16", [], {}, [1], {"a": 1}]  # fmt: skip
ESCAPES = ["../outside.bin", "shards/../../outside.bin", "/etc/passwd", "shards/00000.tokens.bin",
           "shards/00001.docs.npy", "shards", "", "manifest.json"]  # fmt: skip


def _locations(node: Any, at: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield at
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _locations(v, (*at, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _locations(v, (*at, i))


KEYS = ["x", "a\nb", "16", "0016", "1" * 5000, "\u0663\u0662", "val", "path", "bytes"]


def _at(man: Any, loc: tuple[Any, ...]) -> Any:
    for k in loc:
        man = man[k]
    return man


def _mutate(man: Any, data: st.DataObject) -> Any:
    ops = ["delete", "set", "retype", "nudge", "dup_shard", "escape", "add_key"]
    op = data.draw(st.sampled_from(ops))
    if op == "add_key":  # keys a reader might parse (bucket lengths) or print (a newline)
        dicts = [loc for loc in _locations(man) if isinstance(_at(man, loc), dict)]
        node = _at(man, data.draw(st.sampled_from(dicts)))
        node[data.draw(st.sampled_from(KEYS))] = copy.deepcopy(data.draw(st.sampled_from(ODD)))
        return man
    if op == "dup_shard":
        i = data.draw(st.integers(0, len(man["shards"]) - 1))
        man["shards"].insert(data.draw(st.integers(0, len(man["shards"]))), copy.deepcopy(
            man["shards"][i]))  # fmt: skip
        return man
    if op == "escape":
        recs = [loc for loc in _locations(man) if loc and loc[-1] == "path"]
        loc = data.draw(st.sampled_from(recs))
        node = man
        for k in loc[:-1]:
            node = node[k]
        node["path"] = data.draw(st.sampled_from(ESCAPES))
        return man
    loc = data.draw(st.sampled_from(list(_locations(man))))
    if not loc:
        return data.draw(st.sampled_from(ODD))  # the whole manifest replaced
    parent = man
    for k in loc[:-1]:
        parent = parent[k]
    key, old = loc[-1], parent[loc[-1]]
    if op == "delete":
        del parent[key]
    elif op == "set":
        parent[key] = copy.deepcopy(data.draw(st.sampled_from(ODD)))
    elif op == "retype":
        if not isinstance(old, str):
            parent[key] = str(old)
        else:
            parent[key] = int(old) if old.isdecimal() else [old]
    elif isinstance(old, int) and not isinstance(old, bool):
        parent[key] = old + data.draw(st.sampled_from([-1, 1, old, -old, 1 << 20]))
    return man


def _exercise(ds: Dataset) -> None:
    """Use an opened dataset the way stats and the loaders do."""
    compute_stats(ds)
    for L in ds.bucket_lengths:
        n = ds.num_rows(L)
        ds.rows(L, [0, n - 1], out=np.empty((2, L + 1), dtype=np.int64))


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("prop")
    ds = _build(base / "ds", random_lengths(80, seed=2, hi=700), shard_size=2_000)
    (base / "outside.bin").write_bytes(b"\x01" * 4096)
    # Vacuity guard: unmutated, the sandbox opens, serves rows in both splits and verifies, so
    # a refusal below is the mutation's doing.
    assert verify_dataset(ds)["shards"] >= 3
    for split in ("train", "val"):
        assert open_dataset(ds, split).bucket_lengths
        _exercise(open_dataset(ds, split))
    return ds


@settings(max_examples=500, deadline=None)
@given(data=st.data())
def test_any_mutated_manifest_gives_a_result_or_one_line(
    sandbox: Path, data: st.DataObject
) -> None:
    original = (sandbox / MANIFEST).read_text()
    try:
        man = json.loads(original)
        for _ in range(data.draw(st.integers(1, 3))):
            if not isinstance(man, dict) or not isinstance(man.get("shards"), list):
                break
            man = _mutate(man, data)
        if isinstance(man, dict) and "fingerprint" in man:
            man["fingerprint"] = fingerprint(man)
        (sandbox / MANIFEST).write_text(json.dumps(man))
        for call in (
            lambda: _exercise(open_dataset(sandbox, "train")),
            lambda: _exercise(open_dataset(sandbox, "val")),
            lambda: verify_dataset(sandbox),
        ):
            with watch(sandbox) as outside, deadline(10):
                try:
                    call()
                    event("accepted")
                except (UserError, DataError) as e:
                    event(f"refused: {type(e).__name__} {_one_line(e).split(': ', 1)[-1][:40]}")
            assert outside == [], outside
    finally:
        (sandbox / MANIFEST).write_text(original)
