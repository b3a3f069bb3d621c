"""Attacks on DDTrainer (the HF Trainer adapter): wrong arguments, and checkpoints whose loader
state is missing, forged, from another data order, nested, or not a file. Each is one line."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("transformers")
from transformers import LlamaForCausalLM

import ddecomp
from ddecomp.errors import UserError
from ddecomp.integrations.hf import DDTrainer
from ddecomp.integrations.hf_state import STATE_NAME
from tests.integrations._hf import TPS, hf_args, make_data, tiny_llama


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_data(tmp_path_factory.mktemp("hfdata"), n_tokens=30_000)


def loader(data: Path, **kw: Any) -> ddecomp.VSLLoader:
    return ddecomp.VSLLoader(ddecomp.open_dataset(data), tokens_per_step=TPS,
                             total_tokens=6 * TPS, **kw)  # fmt: skip


def refused(fn: Callable[[], object], match: str) -> str:
    with pytest.raises(UserError, match=match) as e:
        fn()
    msg = str(e.value)
    assert "\n" not in msg
    return msg


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"per_device_train_batch_size": 4}, "per_device_train_batch_size=4 conflicts"),
        ({"num_train_epochs": 2.0}, "num_train_epochs=2.0 conflicts"),
        ({"dataloader_num_workers": 2}, "set workers on the loader's World"),
        ({"label_smoothing_factor": 0.1}, "label_smoothing_factor"),
        ({"auto_find_batch_size": True}, "auto_find_batch_size"),
        ({"gradient_accumulation_steps": 3}, "does not divide the 2 rows per rank of a 128-token"),
        ({"max_steps": 1000}, "more than the loader's plan of 6 global steps"),
        ({"eval_strategy": "steps"}, "needs eval_loader="),
        (
            {"accelerator_config": {"dispatch_batches": True}},
            "dispatch_batches=True would re-shard",
        ),
    ],
)
def test_conflicting_training_arguments_are_refused(
    data: Path, tmp_path: Path, kw: dict[str, Any], match: str
) -> None:
    args = hf_args(tmp_path, **kw)
    refused(lambda: DDTrainer(model=tiny_llama(), args=args, train_loader=loader(data)), match)


def test_eval_batch_size_is_refused_with_an_eval_loader(data: Path, tmp_path: Path) -> None:
    args = hf_args(tmp_path, per_device_eval_batch_size=2)
    DDTrainer(model=tiny_llama(), args=args, train_loader=loader(data))  # no eval: irrelevant
    refused(lambda: DDTrainer(model=tiny_llama(), args=args, train_loader=loader(data),
                              eval_loader=loader(data)), "per_device_eval_batch_size")  # fmt: skip


def test_wrong_loaders_and_arguments_are_refused(data: Path, tmp_path: Path) -> None:
    args = hf_args(tmp_path)
    m = tiny_llama()
    refused(lambda: DDTrainer(model=m, args=args, train_loader=[1, 2]), "not a ddecomp loader")  # type: ignore[arg-type]
    two = loader(data, world=ddecomp.World(rank=1, world_size=2))
    refused(lambda: DDTrainer(model=m, args=args, train_loader=two), "serves rank 1 of 2")
    refused(lambda: DDTrainer(model=m, args=args, train_loader=loader(data),
                              train_dataset=[1]), "train_loader=")  # fmt: skip
    refused(lambda: DDTrainer(model=m, args=args, train_loader=loader(data),
                              data_collator=lambda b: b), "data_collator")  # fmt: skip
    moved = loader(data)
    next(iter(moved))
    tr = DDTrainer(model=m, args=args, train_loader=moved)
    refused(tr.train, "train_loader is at step 1 of epoch 0")
    refused(lambda: DDTrainer(model=m, args=args, train_loader=loader(data)).evaluate(),
            "needs eval_loader=")  # fmt: skip
    # the caller's arguments are not changed by the adapter
    assert (args.max_steps, args.ignore_data_skip) == (-1, False)


class IgnoresPositions(LlamaForCausalLM):
    """A causal LM that drops position_ids: packed pieces would attend to each other."""

    def forward(self, input_ids: Any = None, position_ids: Any = None, **kw: Any) -> Any:
        return super().forward(input_ids=input_ids, **kw)


def test_a_model_that_does_not_mask_packed_rows_is_refused(tmp_path: Path) -> None:
    root = make_data(tmp_path / "t", tails=True, n_tokens=30_000)
    ld = ddecomp.VSLLoader(ddecomp.open_dataset(root), tokens_per_step=TPS)
    assert ld.masked_lengths
    model = IgnoresPositions(tiny_llama().config)
    refused(lambda: DDTrainer(model=model, args=hf_args(tmp_path), train_loader=ld),
            "lets packed tail rows attend across pieces")  # fmt: skip
    DDTrainer(model=tiny_llama(), args=hf_args(tmp_path), train_loader=ld)  # masks: accepted


@pytest.fixture(scope="module")
def checkpoint(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ckpt")
    args = hf_args(out, save_strategy="steps", save_steps=2, max_steps=2)
    DDTrainer(model=tiny_llama(), args=args, train_loader=loader(data)).train()
    ck = out / "checkpoint-2"
    assert (ck / STATE_NAME).is_file()
    return ck


def _resume(data: Path, ck: Path, tmp_path: Path, **kw: Any) -> None:
    args = hf_args(tmp_path / "o", save_strategy="steps", save_steps=2)
    tr = DDTrainer(model=tiny_llama(), args=args, train_loader=loader(data, **kw))
    tr.train(resume_from_checkpoint=str(ck))


def _edit(ck: Path, tmp_path: Path, fn: Callable[[Path], None]) -> Path:
    dst = tmp_path / "checkpoint-2"
    shutil.copytree(ck, dst)
    fn(dst / STATE_NAME)
    return dst


def _set(key: str, value: object) -> Callable[[Path], None]:
    def f(p: Path) -> None:
        doc = json.loads(p.read_text())
        doc[key] = value
        p.write_text(json.dumps(doc))

    return f


def _write(text: str | bytes) -> Callable[[Path], None]:
    def f(p: Path) -> None:
        p.write_bytes(text.encode() if isinstance(text, str) else text)

    return f


def _to_dir(p: Path) -> None:
    p.unlink()
    p.mkdir()


def _to_fifo(p: Path) -> None:
    p.unlink()
    os.mkfifo(p)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda p: p.unlink(), "has no ddecomp_loader_state.json"),
        (_write("[" * 100_000 + "]" * 100_000), "nested too deeply|not an object"),
        (_write(b"\xff\xfe garbage"), "not valid UTF-8 JSON"),
        (_write("[1, 2]"), "holds a JSON list"),
        (_to_dir, "not a regular file"),
        (_to_fifo, "not a regular file"),
        (_set("global_step", 5), "saved at global step 5 but trainer_state.json is at step 2"),
        (_set("global_step", True), "'global_step' is True"),
        (_set("format", "other"), "format 'other'"),
        (_set("loader", [1]), "field 'loader' is a list"),
        (_set("loader", {"version": 1, "loader": "vsl"}), "cannot resume: the loader state"),
    ],
)
def test_a_broken_loader_state_is_refused(
    data: Path, checkpoint: Path, tmp_path: Path, edit: Callable[[Path], None], match: str
) -> None:
    ck = _edit(checkpoint, tmp_path, edit)
    refused(lambda: _resume(data, ck, tmp_path), match)


def test_a_nested_loader_field_is_refused(data: Path, checkpoint: Path, tmp_path: Path) -> None:
    def nest(p: Path) -> None:
        doc = json.loads(p.read_text())
        doc["loader"]["seed"] = json.loads("[" * 500 + "]" * 500)
        p.write_text(json.dumps(doc))

    ck = _edit(checkpoint, tmp_path, nest)
    refused(lambda: _resume(data, ck, tmp_path), "cannot resume: seed is")


def test_another_data_order_or_a_missing_trainer_state_is_refused(
    data: Path, checkpoint: Path, tmp_path: Path
) -> None:
    refused(lambda: _resume(data, checkpoint, tmp_path, seed=1), "cannot resume: seed is 0")
    ck = _edit(checkpoint, tmp_path, lambda p: None)
    (ck / "trainer_state.json").unlink()
    refused(lambda: _resume(data, ck, tmp_path), "trainer_state.json does not exist")
    refused(lambda: _resume(data, tmp_path / "nowhere", tmp_path), "is not a directory")
    args = hf_args(tmp_path / "empty")
    tr = DDTrainer(model=tiny_llama(), args=args, train_loader=loader(data))
    refused(lambda: tr.train(resume_from_checkpoint=True), "holds no checkpoint-N")


def test_the_untouched_checkpoint_resumes(data: Path, checkpoint: Path, tmp_path: Path) -> None:
    """The control: the same resume on the unedited copy trains the remaining steps."""
    ck = _edit(checkpoint, tmp_path, lambda p: None)
    args = hf_args(tmp_path / "o")
    tr = DDTrainer(model=tiny_llama(), args=args, train_loader=loader(data))
    out = tr.train(resume_from_checkpoint=str(ck))
    assert out.global_step == 6
    assert tr.train_loader.step == 6
    assert torch.isfinite(torch.tensor(out.training_loss))
