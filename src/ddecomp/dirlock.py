"""One writer per directory: a lock file held by ``prepare`` and ``train`` for the whole run.

``DIR/.ddecomp.lock`` is locked with ``flock`` (exclusive, non-blocking) by the process that
writes ``DIR``; a second ``prepare`` or ``train`` into the same directory is refused at once
with one line naming the holder's pid, instead of mixing two runs' files under one manifest or
interleaving two runs' metrics. The kernel releases the lock when its holder dies (kill -9
included), so a lock file left by a killed run never blocks the rerun. A finished or refused run
removes its lock file (unlinked while still locked; a run that opened the old file re-checks
that the name still points at the file it locked, and retries once on the new one).

Limits: ``flock`` is advisory and per host: it excludes ddecomp runs on this machine (and on
local filesystems; NFS emulates it with POSIX locks where the server supports them), not a
writer on another host of a shared filesystem, nor a program that ignores the lock.

The lock is taken lazily (:meth:`DirLock.acquire`, once the run's inputs are checked), so a
refused command writes nothing: a directory created only for the lock is removed again.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from pathlib import Path
from types import TracebackType

from ddecomp.errors import UserError

LOCK_FILE = ".ddecomp.lock"


class DirLock:
    """``with DirLock(dir, "prepare") as lock: ... lock.acquire() ...``: held until the end."""

    def __init__(self, directory: Path, command: str, enabled: bool = True) -> None:
        self.dir, self.command, self.enabled = Path(directory), command, enabled
        self._fd: int | None = None
        self._created = False

    @property
    def path(self) -> Path:
        return self.dir / LOCK_FILE

    def acquire(self) -> None:
        """Lock the directory (creating it); a :class:`UserError` when another run holds it."""
        if not self.enabled or self._fd is not None:
            return
        try:
            if self.dir.exists() and not self.dir.is_dir():
                raise UserError(f"--out {self.dir} exists and is not a directory")
            if not self.dir.is_dir():
                self.dir.mkdir(parents=True)
                self._created = True
            for _ in range(3):
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError as e:
                    os.close(fd)
                    if e.errno in (errno.EWOULDBLOCK, errno.EACCES):
                        raise self._busy() from None
                    raise
                try:  # still the file at that name (not one a finishing run just unlinked)?
                    same = os.path.samestat(os.fstat(fd), os.stat(self.path, follow_symlinks=False))
                except FileNotFoundError:
                    same = False
                if same:
                    os.ftruncate(fd, 0)
                    os.write(fd, f"{os.getpid()} {self.command}\n".encode())
                    self._fd = fd
                    return
                os.close(fd)
        except OSError as e:
            raise UserError(
                f"--out {self.dir}: cannot write there ({e.strerror or e}); choose a writable "
                "directory"
            ) from e
        raise self._busy()

    def _busy(self) -> UserError:
        try:
            holder = self.path.read_text(encoding="utf-8", errors="replace").split()
        except OSError:
            holder = []
        who = f"ddecomp {holder[1]} (pid {holder[0]})" if len(holder) >= 2 else "ddecomp run"
        return UserError(
            f"--out {self.dir} is in use by another {who}: one run writes a directory at a "
            "time; wait for it to finish (or stop it) and rerun, or choose another --out"
        )

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                self.path.unlink()  # unlinked while locked: no one can lock this file again
            os.close(self._fd)
            self._fd = None
        if self._created:
            with contextlib.suppress(OSError):
                self.dir.rmdir()  # only when empty: a refused run leaves nothing behind
            self._created = False

    def __enter__(self) -> DirLock:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
