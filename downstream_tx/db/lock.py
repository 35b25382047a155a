"""The SQLite database's daemon lock: one daemon per SQLite file.

SQLite gives one process's transactions no protection from another's beyond its file locks, and the
node's guarantees (one contract timer, the inline connection that never waits) assume one daemon
per file; ``--workers 2`` is refused for that reason, and so is a second daemon on the same file.
The daemon holds an exclusive ``flock`` on ``<database>.lock`` (created 0600, holding the daemon's
pid) for its whole life; the kernel releases it when the process ends, however it ends, so a lock
left by a killed daemon never blocks the next start. ``downstream-admin`` does not take it (its
commands are safe beside a running daemon) but asks it whether a daemon runs (``copy``,
``restore``)."""

from __future__ import annotations

import fcntl
import os


class DatabaseLocked(Exception):
    """Another daemon holds the SQLite database's lock (the message says which and what to do)."""


def lock_path(db_path: str) -> str:
    return os.path.abspath(db_path) + ".lock"


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return ""
    return text if text.isdigit() else ""


class DaemonLock:
    """The exclusive lock on ``<db_path>.lock`` while :meth:`acquire` … :meth:`release`."""

    def __init__(self, db_path: str):
        self.db_path = os.path.abspath(db_path)
        self.path = lock_path(db_path)
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise :class:`DatabaseLocked` at once (never waits)."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _holder(fd)
            os.close(fd)
            raise DatabaseLocked(
                f"database {self.db_path} is in use by another downstream-tx daemon"
                f"{f' (pid {pid})' if pid else ''}, which holds {self.path}: stop it first (one daemon per "
                "SQLite file; several processes need MySQL/MariaDB, see docs/operations.md, \"Running several "
                "processes\")") from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        self._fd = fd

    def release(self) -> None:
        """Give the lock up (the file stays: removing it would let a process that opened it meanwhile
        lock a file nobody else sees)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    @property
    def held(self) -> bool:
        return self._fd is not None


def daemon_pid(db_path: str) -> str | None:
    """The pid of the daemon holding ``db_path``'s lock (``""`` when it wrote none), or None when no
    daemon holds it."""
    path = lock_path(db_path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _holder(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
