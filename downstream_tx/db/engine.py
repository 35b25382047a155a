"""Database engines: everything that differs between SQLite and MySQL/MariaDB lives here.

SQL in this project is written once, with ``?`` placeholders; :meth:`Engine.convert` rewrites it
for PyMySQL. Schema files that must differ per engine are picked by :attr:`Engine.name`.
"""

from __future__ import annotations

import os
import sqlite3
from typing import Any

from downstream_tx.db.url import DbUrl, parse_db_url
from downstream_tx.private import create_private_file, make_private_dirs


class Engine:
    name: str
    dbapi_name: str
    #: the DB-API module
    module: Any
    #: True where every statement is a network round trip, so many-row updates are batched
    batch_updates = False
    #: True where short transactions may run on the calling thread (:meth:`connect_inline`)
    inline = False

    def __init__(self, url: DbUrl):
        self.url = url
        self._converted: dict[str, str] = {}

    def convert(self, sql: str) -> str:
        return sql

    def pool_args(self, pool_size: int) -> dict[str, Any]:
        raise NotImplementedError

    def on_connect(self, conn: Any) -> None:
        """Per-connection set-up, run by the pool for every new connection."""

    def is_transient(self, exc: BaseException) -> bool:
        """True for errors after which re-running the whole transaction may succeed."""
        return False

    def is_connection_error(self, exc: BaseException) -> bool:
        return False

    def is_db_error(self, exc: BaseException) -> bool:
        """An error of the database itself (not a transaction body refusing its input)."""
        return isinstance(exc, self.module.Error) or self.is_connection_error(exc)

    def connect(self) -> Any:
        """A plain connection for synchronous tools (backups, tests)."""
        conn = self.module.connect(**self.pool_args(1)["connkw"])
        self.on_connect(conn)
        return conn

    def describe(self) -> str:
        raise NotImplementedError

    def connect_inline(self) -> Any:
        """A connection for short transactions run on the calling thread, which must never wait
        for a lock (see :meth:`Database.run_short`); None where the engine has none (a server
        engine's statements are network round trips: they stay on the pool's threads)."""
        return None


class SqliteEngine(Engine):
    name = "sqlite"
    dbapi_name = "sqlite3"
    module = sqlite3

    def __init__(self, url: DbUrl):
        super().__init__(url)
        # an in-memory database is one per connection: the inline connection would see another
        self.inline = url.path not in ("", ":memory:") and not url.path.startswith("file::memory:")

    def pool_args(self, pool_size: int) -> dict[str, Any]:
        path = os.path.abspath(self.url.path)
        make_private_dirs(os.path.dirname(path))
        # SQLite gives its -wal and -shm files the database file's mode
        create_private_file(path)
        return {
            "cp_min": 1,
            "cp_max": 1,
            "connkw": {
                "database": self.url.path,
                "check_same_thread": False,
                "timeout": 30.0,
                "isolation_level": "DEFERRED",
            },
        }

    def on_connect(self, conn: sqlite3.Connection) -> None:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=30000")
        conn.execute("PRAGMA synchronous=NORMAL")

    def is_transient(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)

    def describe(self) -> str:
        return f"sqlite:///{self.url.path}"

    def connect_inline(self) -> sqlite3.Connection:
        """Autocommit mode (the caller says ``BEGIN IMMEDIATE`` and ``COMMIT``), a busy timeout of 0
        (a lock held elsewhere is an immediate "database is locked", never a wait), and no automatic
        WAL checkpoint (a checkpoint writes and syncs the database file: the pool's connection does
        them)."""
        conn = sqlite3.connect(self.url.path, timeout=0, isolation_level=None, check_same_thread=False)
        self.on_connect(conn)
        conn.execute("PRAGMA busy_timeout=0")
        conn.execute("PRAGMA wal_autocheckpoint=0")
        return conn


class MysqlEngine(Engine):
    name = "mysql"
    dbapi_name = "pymysql"
    batch_updates = True

    #: lost connection, server gone, can't connect, deadlock, lock wait timeout, server shutdown
    CONNECTION_ERRORS = {2003, 2006, 2013, 2014, 2055, 1053, 1927, 4031}
    TRANSIENT_ERRORS = {1205, 1213} | CONNECTION_ERRORS

    def __init__(self, url: DbUrl):
        super().__init__(url)
        import pymysql

        self.module = pymysql

    def convert(self, sql: str) -> str:
        converted = self._converted.get(sql)
        if converted is None:
            converted = self._converted[sql] = sql.replace("%", "%%").replace("?", "%s")
        return converted

    def pool_args(self, pool_size: int) -> dict[str, Any]:
        return {
            "cp_min": 1,
            "cp_max": pool_size,
            "connkw": {
                "host": self.url.host,
                "port": self.url.port,
                "user": self.url.user,
                "password": self.url.password,
                "database": self.url.database,
                "charset": "utf8mb4",
                "autocommit": False,
                "connect_timeout": 5,
                "read_timeout": 60,
                "write_timeout": 60,
                "init_command": "SET time_zone = '+00:00', "
                "sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION,ERROR_FOR_DIVISION_BY_ZERO'",
            },
        }

    #: seconds MariaDB lets a session sit idle inside a transaction before it ends the session and
    #: rolls back (``idle_transaction_timeout``; None: the server's default). A paused process (SIGSTOP,
    #: a stalled VM) in the middle of a transaction would otherwise hold its row locks, the jobs lease
    #: row among them, until it resumes: no other instance could take the lease over. MySQL has no
    #: such variable (the setting is skipped there).
    idle_transaction_timeout: int | None = None

    def on_connect(self, conn: Any) -> None:
        if self.idle_transaction_timeout is not None:
            with conn.cursor() as cursor:
                try:
                    cursor.execute(f"SET SESSION idle_transaction_timeout = {int(self.idle_transaction_timeout)}")
                except self.module.err.MySQLError:
                    pass  # MySQL: unknown system variable
        # not part of init_command: SET TRANSACTION cannot be combined with other assignments, and
        # the variable's name differs between MariaDB (tx_isolation) and MySQL 8 (transaction_isolation)
        with conn.cursor() as cursor:
            cursor.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")

    def _code(self, exc: BaseException) -> int | None:
        if isinstance(exc, self.module.err.MySQLError) and exc.args and isinstance(exc.args[0], int):
            return exc.args[0]
        return None

    def is_connection_error(self, exc: BaseException) -> bool:
        from twisted.enterprise.adbapi import ConnectionLost

        if isinstance(exc, (ConnectionLost, self.module.err.InterfaceError, ConnectionError)):
            return True
        return self._code(exc) in self.CONNECTION_ERRORS

    def is_transient(self, exc: BaseException) -> bool:
        return self.is_connection_error(exc) or self._code(exc) in self.TRANSIENT_ERRORS

    def describe(self) -> str:
        return f"mysql://{self.url.user}:***@{self.url.host}:{self.url.port}/{self.url.database}"


def create_engine(url: str) -> Engine:
    parsed = parse_db_url(url)
    if parsed.scheme == "sqlite":
        return SqliteEngine(parsed)
    return MysqlEngine(parsed)
