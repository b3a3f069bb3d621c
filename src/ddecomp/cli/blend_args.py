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


def shares(text: str) -> tuple[float, ...]:
    """``--shares``: numbers that sum to 1 (an argparse type). The library's
    :meth:`~ddecomp.data.blend.Blend.from_shares` normalises any positive weights; on the command
    line a sum other than 1 is more likely a typo (``0.7,0.4``) than a wish, so it is refused."""
    got = floats(text)
    total = sum(got)
    if not abs(total - 1.0) <= 1e-6:  # `not <=`: NaN is refused too
        msg = f"{text!r} sums to {total:g}, not 1; give each DIR's share of the tokens"
        raise argparse.ArgumentTypeError(msg)
    return got


def add_source_arguments(p: Any, optional: bool = False) -> None:
    """``DIR [DIR ...]`` and either ``--factors`` or ``--shares`` (argparse refuses both);
    ``optional``: no DIR is needed (``plan --rows``).

    How many weights there are is checked where the data is opened
    (:func:`ddecomp.data.blend.open_sources`), so a library caller gets the same check.
    """
    p.add_argument(
        "data",
        metavar="DIR",
        nargs="*" if optional else "+",
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
        type=shares,
        metavar="S,S,...",
        help="blend: each DIR's share of the training tokens, summing to 1, e.g. 0.7,0.3; the "
        "limiting DIR is used once, the others sub-sampled (default: none, use --factors)",
    )
