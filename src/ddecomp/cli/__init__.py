"""Command-line interface: a thin layer over the library.

Each subcommand lives in its own module with ``register(subparsers)``, which adds its parser and
sets ``func`` to a function taking the parsed namespace and returning an exit code. Errors a user
can cause (:class:`~ddecomp.errors.UserError`) are printed as one line and exit with code 2, and
so is an ``OSError`` (a full disk, a name too long, an input removed: the file and the reason); a
damaged dataset (:class:`~ddecomp.errors.DataError`) exits with code 1. No traceback is shown for
either. Output into a pipe whose reader has left (``ddecomp stats DIR | head``) ends quietly with
exit code 141, what a shell reports for a producer killed by SIGPIPE.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from ddecomp.errors import DataError, UserError
from ddecomp.version import __version__

# Subcommand modules, in the order `ddecomp --help` lists them.
_COMMANDS = ("prepare", "inspect", "plan", "train", "eval", "compare")
_SIGPIPE_EXIT = 128 + 13  # 13 = SIGPIPE on POSIX
# What an interrupted command's user does next (commands not named here simply start again).
_RESUME_HINT = {
    "prepare": "; rerun the same command to resume (finished shards are kept)",
    "train": "; rerun the same command with --resume to continue from the latest checkpoint "
    "(one is written at the step Ctrl-C ends, unless --no-checkpoints: then start again)",
}


_RETRY = {  # after an OSError (a full disk, a removed input): what the rerun keeps
    "prepare": "rerun the same command (finished shards are kept)",
    "train": "rerun with --resume (from the latest checkpoint)",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ddecomp",
        allow_abbrev=False,  # `--tokens` must never be read as `--tokens-per-step`
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
    args, extra = parser.parse_known_args(argv)
    if extra:  # the subcommand's usage, not the top level's
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        sub.choices[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        code = int(args.func(args))
        sys.stdout.flush()  # a reader that left surfaces here, not in the interpreter's exit
    except BrokenPipeError:
        # Python ignores SIGPIPE, so `| head` raises here instead of ending the process quietly.
        # Point stdout at /dev/null so the flush at exit does not report the same pipe again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return _SIGPIPE_EXIT
    except UserError as e:
        print(f"ddecomp {args.command}: error: {e}", file=sys.stderr)
        return UserError.exit_code
    except DataError as e:
        print(f"ddecomp {args.command}: {e}", file=sys.stderr)
        return DataError.exit_code
    except OSError as e:  # the environment: a full disk, a name too long, an input removed
        where = f"{e.filename}: " if e.filename else ""
        retry = _RETRY.get(args.command, "rerun")
        print(
            f"ddecomp {args.command}: error: cannot read or write {where}{e.strerror or e}; "
            f"fix the path, free space or fix permissions, then {retry}",
            file=sys.stderr,
        )
        return UserError.exit_code
    except KeyboardInterrupt:
        print(
            f"ddecomp {args.command}: interrupted{_RESUME_HINT.get(args.command, '')}",
            file=sys.stderr,
        )
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
