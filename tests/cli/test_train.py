"""``ddecomp train``'s flags reach the config they name (without training anything)."""

from __future__ import annotations

import shlex
from dataclasses import asdict

from ddecomp.cli import build_parser
from ddecomp.cli.train import config_from_args
from ddecomp.training.config import TrainConfig

# Every flag, each at a value other than its default, as a shell would pass them.
ARGV = shlex.split(
    "train a b --shares 0.7,0.3 --out run --method pack --size small --tokens 65536 "
    "--tokens-per-step 4096 --max-len 512 --curriculum uniform --cycles 3 --lr 0.001 "
    "--warmup 2 --seed 7 --device cpu --compile --eval-every 4 --eval-tokens 1024 "
    "--checkpoint-every 5 --no-checkpoints --deterministic --num-workers 2 --no-progress"
)
EXPECTED = {
    "data": ("a", "b"),
    "shares": (0.7, 0.3),
    "out": "run",
    "method": "pack",
    "size": "small",
    "tokens": 65536,
    "tokens_per_step": 4096,
    "max_len": 512,
    "curriculum": "uniform",
    "cycles": 3,
    "lr": 0.001,
    "warmup": 2,
    "seed": 7,
    "device": "cpu",
    "compile": True,
    "eval_every": 4,
    "eval_tokens": 1024,
    "checkpoint_every": 5,
    "checkpoints": False,
    "deterministic": True,
    "num_workers": 2,
    "progress": False,
}


def test_every_flag_reaches_its_field() -> None:
    got = asdict(config_from_args(build_parser().parse_args(ARGV)))
    default = asdict(TrainConfig(data="", out=""))
    assert all(default[k] != v for k, v in EXPECTED.items())  # vacuity guard: every flag is set
    assert {k: got[k] for k in EXPECTED} == EXPECTED
    assert {k: v for k, v in got.items() if k not in EXPECTED} == {
        k: v for k, v in default.items() if k not in EXPECTED
    }


def test_one_dir_stays_a_string() -> None:
    args = build_parser().parse_args(["train", "only", "--out", "r"])
    assert config_from_args(args).data == "only"
