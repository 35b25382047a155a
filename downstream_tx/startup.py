"""Why the node (or ``downstream-admin``) could not start, in one line: what failed, and what to
check. Shared by the daemon (``tap.py``) and the admin command.

Exit statuses (documented in docs/operations.md, "Exit statuses"):

- ``2`` — the configuration is invalid (a setting, an option, a config file); nothing was touched;
- ``1`` — the node could not start: the database refused or could not be reached, a listener could
  not be bound, a file could not be written, the schema is newer than the code.
"""

from __future__ import annotations

import atexit
import errno
import os
import re
import signal
import sqlite3
import sys
from collections.abc import Iterator
from typing import Any

from twisted.logger import ILogObserver, Logger
from twisted.python.components import Componentized

from downstream_tx.config import Config, ConfigError
from downstream_tx.db.url import InvalidDbUrl, parse_db_url

log = Logger()

EXIT_START_FAILED = 1
EXIT_CONFIG = 2

_PYMYSQL_REASON = re.compile(r"\((.*)\)\s*$")


class StartupError(Exception):
    """A start-up failure already explained in one line."""

    def __init__(self, message: str, exit_code: int = EXIT_START_FAILED):
        super().__init__(message)
        self.exit_code = exit_code


class MissingDatabase(StartupError):
    """An admin command that needs an existing node found no database where it looked."""


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def explain(exc: BaseException, config: Config | None = None) -> StartupError | None:
    """A :class:`StartupError` for a failure whose cause is known, else None (the caller then
    logs the traceback: an unexpected failure is a bug worth its details)."""
    from downstream_tx.db.lock import DatabaseLocked
    from downstream_tx.db.schema import SchemaError

    for e in _chain(exc):
        if isinstance(e, StartupError):
            return e
        if isinstance(e, DatabaseLocked):
            return StartupError(str(e))
        if isinstance(e, ConfigError):
            return StartupError(f"configuration error: {e}", EXIT_CONFIG)
        if isinstance(e, SchemaError):
            return StartupError(str(e))
        mysql = _mysql_error(e, config)
        if mysql is not None:
            return StartupError(mysql)
        if isinstance(e, sqlite3.Error):
            return StartupError(_sqlite_error(e, config))
        listen = _listen_error(e)
        if listen is not None:
            return StartupError(listen)
        if isinstance(e, OSError) and e.strerror:
            return StartupError(_os_error(e))
    return None


def _db(config: Config | None):
    if config is None:
        return None
    try:
        return parse_db_url(config.db_url)
    except InvalidDbUrl:
        return None


def _mysql_error(e: BaseException, config: Config | None) -> str | None:
    try:
        import pymysql
    except ImportError:  # pragma: no cover - a dependency
        return None
    if not isinstance(e, pymysql.err.MySQLError) or not e.args or not isinstance(e.args[0], int):
        return None
    code, text = e.args[0], str(e.args[1]) if len(e.args) > 1 else ""
    url = _db(config)
    user = url.user if url else "?"
    where = ",".join(f"{h}:{p}" for h, p in url.hosts) if url else "the server"
    name = url.database if url else "?"
    head = f"database mysql://{user}@{where}/{name}"
    if code in (1045, 1698):
        return (f"{head}: access denied for user '{user}' (wrong user name or password? check db or "
                f"db_password_file; in a URL, @ : / % in the password must be percent-encoded)")
    if code == 1044:
        return (f"{head}: user '{user}' may not use database '{name}' (grant it: GRANT … ON {name}.* TO "
                f"'{user}'@'<this host>', see docs/operations.md, MySQL / MariaDB)")
    if code == 1049:
        return (f"{head}: database '{name}' does not exist (create it: CREATE DATABASE {name} CHARACTER SET "
                f"utf8mb4 COLLATE utf8mb4_bin, see docs/operations.md)")
    if code in (2003, 2005, 2006, 2013):
        match = _PYMYSQL_REASON.search(text)
        reason = match.group(1) if match else text
        return (f"{head}: cannot connect to {where} ({reason}); is the server running, and are the host "
                f"and port in db right?")
    return f"{head}: MySQL error {code}: {text}"


def _sqlite_error(e: sqlite3.Error, config: Config | None) -> str:
    url = _db(config)
    path = url.path if url is not None and url.scheme == "sqlite" else "the SQLite database"
    text = str(e)
    if "readonly" in text or "read-only" in text:
        return (f"database {path}: the SQLite file is read-only (the node must write it and create "
                f"{path}-wal and -shm next to it: check the permissions of the file and its directory, and "
                f"that the file system is not mounted read-only)")
    if "unable to open" in text:
        return (f"database {path}: cannot open the SQLite file (check that its directory exists and this user "
                f"may write there)")
    if "not a database" in text:
        return f"database {path}: the file is not a SQLite database (wrong db path?)"
    return f"database {path}: {text}"


def _listen_error(e: BaseException) -> str | None:
    from twisted.internet.error import CannotListenError

    if not isinstance(e, CannotListenError):
        return None
    reason = getattr(e.socketError, "strerror", None) or str(e.socketError)
    where = f"{e.interface or '*'}:{e.port}"
    hint = ""
    if getattr(e.socketError, "errno", None) == errno.EADDRINUSE:
        hint = f" (another process holds the port: ss -ltnp 'sport = :{e.port}'; stop it or change listen)"
    elif getattr(e.socketError, "errno", None) == errno.EACCES:
        hint = " (ports below 1024 need privileges: use socket activation, see docs/operations.md)"
    elif getattr(e.socketError, "errno", None) == errno.EADDRNOTAVAIL:
        hint = " (no network interface has that address: check listen's interface=)"
    return f"cannot listen on {where}: {reason}{hint}"


def _os_error(e: OSError) -> str:
    path = e.filename or ""
    hint = ""
    if e.errno == errno.EROFS:
        hint = " (the file system is mounted read-only: point data_dir / chunk_dir / log_file at a writable place)"
    elif e.errno in (errno.EACCES, errno.EPERM):
        hint = " (this user may not write there: check the owner and mode)"
    return f"{path + ': ' if path else ''}{e.strerror}{hint}"


class DaemonProcess:
    """The process side of a daemon service, shared by the node (``tap.NodeService``) and the
    workers' supervisor (``workers.WorkerSupervisor``): the application's log observer, SIGTERM and
    SIGHUP, and a start-up failure's one line and exit status. The service provides ``config``,
    ``reactor``, ``logging`` and ``reload()``."""

    def setServiceParent(self, parent: Any) -> None:
        """Attached to a twistd application: make our log observer the application's, which
        ``twistd`` starts logging to (unless ``twistd --logger`` names another)."""
        if isinstance(parent, Componentized) and parent.getComponent(ILogObserver, None) is None:
            parent.setComponent(ILogObserver, self.logging.observer)
        super().setServiceParent(parent)

    def _install_signal_handlers(self) -> None:
        """SIGTERM is the normal way to stop (systemd): a clean stop with exit status 0, where the
        reactor's own handler would re-raise the signal after shutdown. SIGHUP: ``reload()``."""
        signal.signal(signal.SIGTERM, lambda signum, frame: self.reactor.callFromThread(self.reactor.stop))
        signal.signal(signal.SIGHUP, lambda signum, frame: self.reactor.callFromThread(self.reload))

    def _fatal(self, failure: Any) -> None:
        """One line naming what failed and what to check (a traceback only for the unexpected),
        then stop with the documented exit status (1, or 2 for a setting)."""
        explained = explain(failure.value, self.config)
        if explained is not None:
            reason, code = str(explained), explained.exit_code
            log.critical("cannot start: {reason}", reason=reason)
        else:
            reason, code = f"unexpected error: {failure.getErrorMessage()} (traceback in the log)", EXIT_START_FAILED
            log.failure("cannot start: unexpected error", failure)
        if self.config.log_file:
            sys.stderr.write(f"downstream: cannot start: {reason}\n")
        self._stop_with(code)

    def _stop_with(self, code: int) -> None:
        """Stop the reactor; the exit status is set at interpreter exit, after twistd has removed
        its pid file."""
        atexit.register(_exit_now, code)
        if self.reactor.running:
            self.reactor.stop()
        else:
            self.reactor.callWhenRunning(self.reactor.stop)


def _exit_now(code: int) -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)
