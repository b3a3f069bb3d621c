"""Errors a user can cause, kept apart from internal bugs.

A :class:`UserError` is a mistake in the input, arguments or files a user gave us. The CLI prints
its message as one line (what is wrong, where, and what to do) and exits with code 2; it never
shows a traceback. A :class:`DataError` means a prepared dataset on disk is damaged or does not
match its manifest (``verify`` exits 1 on it). Internal invariants use ``assert``: a failing
assertion is our bug, not the user's.
"""

from __future__ import annotations


class UserError(Exception):
    """A user mistake: bad argument, unreadable or malformed input, conflicting output dir."""

    exit_code = 2


class DataError(Exception):
    """A prepared dataset does not match its manifest or breaks an invariant."""

    exit_code = 1
