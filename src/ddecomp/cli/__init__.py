"""Command-line interface: a thin layer over the library.

Each subcommand lives in its own module with ``register(subparsers)``, which adds its parser and
sets ``func`` to a function taking the parsed namespace and returning an exit code. Errors a user
can cause (:class:`~ddecomp.errors.UserError`) are printed as one line and exit with code 2; a
damaged dataset (:class:`~ddecomp.errors.DataError`) exits with code 1. No traceback is shown for
either.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from ddecomp.errors import DataError, UserError
from ddecomp.version import __version__

# Subcommand modules, in the order `ddecomp --help` lists them.
_COMMANDS = ("prepare", "inspect", "plan", "train", "compare")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ddecomp",
        description="Dataset Decomposition: prepare power-of-two buckets, plan variable-length "
        "curricula, train and compare.",
    )
    parser.add_argument("--version", action="version", version=f"ddecomp {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _COMMANDS:
        importlib.import_module(f".{name}", __name__).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = int(args.func(args))
    except UserError as e:
        print(f"ddecomp {args.command}: error: {e}", file=sys.stderr)
        return UserError.exit_code
    except DataError as e:
        print(f"ddecomp {args.command}: {e}", file=sys.stderr)
        return DataError.exit_code
    except KeyboardInterrupt:
        print(f"ddecomp {args.command}: interrupted", file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
