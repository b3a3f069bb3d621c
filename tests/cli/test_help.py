"""Every option of every subcommand states its default (and, for a number, its unit); no option
is ever read from an abbreviation (issue 12 item 5).

The walk covers whatever options the parsers hold, so an option added later is held to the same
rule without touching this file.
"""

from __future__ import annotations

import argparse

import pytest

from ddecomp.cli import build_parser, main

# Words that name what a number counts or measures. A numeric option's help must use one.
UNITS = (
    "token", "target", "step", "second", "process", "fraction", "count", "rank", "MB", "seed",
    "integer", "coefficient", "norm", "id", "checkpoint", "cycle", "0-based", "rate", "epoch",
)  # fmt: skip


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("ddecomp has no subcommands")


def _options() -> list[tuple[str, argparse.Action]]:
    out = []
    for name, sub in _subparsers(build_parser()).items():
        for action in sub._actions:
            if action.option_strings and not isinstance(action, argparse._HelpAction):
                out.append((f"{name} {action.option_strings[0]}", action))
    return out


def test_the_walk_sees_every_subcommand_and_its_options() -> None:
    subs = _subparsers(build_parser())
    assert {"prepare", "verify", "stats", "plan", "train", "compare"} <= set(subs)
    names = {n for n, _ in _options()}
    assert {"train --seed", "train --curriculum", "train --num-workers", "plan --mode"} <= names
    assert len(names) > 60  # vacuity guard: the options were really walked


@pytest.mark.parametrize(("name", "action"), _options(), ids=[n for n, _ in _options()])
def test_every_option_states_its_default_and_unit(name: str, action: argparse.Action) -> None:
    text = action.help or ""
    assert text, f"{name} has no help"
    if action.nargs == 0:  # a switch: off unless given, which its help need not repeat
        return
    assert "default" in text or "required" in text, f"{name}: help states no default: {text!r}"
    if action.type in (int, float):
        assert any(u in text for u in UNITS), f"{name}: help states no unit: {text!r}"


def test_no_parser_accepts_abbreviations() -> None:
    root = build_parser()
    assert root.allow_abbrev is False
    for name, sub in _subparsers(root).items():
        assert sub.allow_abbrev is False, name


def test_an_abbreviated_option_is_an_error_not_another_option(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # `--tokens-per` used to be read as --tokens-per-step; an unknown option now stops argparse.
    with pytest.raises(SystemExit) as e:
        main(["train", "DIR", "--out", "RUN", "--tokens-per", "8192"])
    assert e.value.code == 2
    assert "unrecognized arguments: --tokens-per" in capsys.readouterr().err


def test_the_train_config_has_a_flag_for_every_setting() -> None:
    # config.json holds weight_decay, min_lr_ratio, grad_clip, keep_checkpoints: each is a flag.
    train = _subparsers(build_parser())["train"]
    dests = {a.dest for a in train._actions}
    assert {"weight_decay", "min_lr_ratio", "grad_clip", "keep_checkpoints"} <= dests
    args = build_parser().parse_args(
        ["train", "D", "--out", "R", "--weight-decay", "0.2", "--grad-clip", "0.5",
         "--min-lr-ratio", "0.05", "--keep-checkpoints", "3"]
    )  # fmt: skip
    from ddecomp.cli.train import config_from_args

    cfg = config_from_args(args)
    assert (cfg.weight_decay, cfg.grad_clip, cfg.min_lr_ratio, cfg.keep_checkpoints) == (
        0.2, 0.5, 0.05, 3,
    )  # fmt: skip
