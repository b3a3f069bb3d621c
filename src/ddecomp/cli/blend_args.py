"""The data arguments ``plan`` and ``train`` share: one dataset, or several as a blend."""

from __future__ import annotations

import argparse
from typing import Any


def floats(text: str) -> tuple[float, ...]:
    """A comma-separated list of numbers (an argparse type)."""
    try:
        return tuple(float(x) for x in text.split(","))
    except ValueError:
        msg = f"{text!r} is not a comma-separated list of numbers"
        raise argparse.ArgumentTypeError(msg) from None


def add_source_arguments(p: Any) -> None:
    """``DIR [DIR ...]`` and either ``--factors`` or ``--shares`` (argparse refuses both).

    How many weights there are is checked where the data is opened
    (:func:`ddecomp.data.blend.open_sources`), so a library caller gets the same check.
    """
    p.add_argument(
        "data",
        metavar="DIR",
        nargs="+",
        help="prepared dataset (ddecomp prepare); several are blended into one",
    )
    weights = p.add_mutually_exclusive_group()
    weights.add_argument(
        "--factors",
        type=floats,
        metavar="F,F,...",
        help="blend: epochs of each DIR per epoch of the blend, e.g. 1,0.5 (default: all 1)",
    )
    weights.add_argument(
        "--shares",
        type=floats,
        metavar="S,S,...",
        help="blend: each DIR's share of the training tokens, e.g. 0.7,0.3; the limiting DIR is "
        "used once, the others sub-sampled",
    )
