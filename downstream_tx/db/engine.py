"""Database engines: everything that differs between SQLite and MySQL/MariaDB lives here.

SQL in this project is written once, with ``?`` placeholders; :meth:`Engine.convert` rewrites it
for PyMySQL. Schema files that must differ per engine are picked by :attr:`Engine.name`.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
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
    #: True where the acknowledgement of a COMMIT can be lost while the commit itself happened (a
    #: server at the other end of a connection): write transactions then record their id in their
    #: own commit (table ``txn_outcomes``), so a retry can learn what was committed
    #: (:class:`~downstream_tx.db.database.Database`)
    commit_can_be_lost = False

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

    def drops_connection(self, exc: BaseException) -> bool:
        """True when the connection that raised ``exc`` must not be used again (the pool closes it
        quietly and the next transaction on its thread opens a new one)."""
        return False

    def commit_outcome_unknown(self, exc: BaseException) -> bool:
        """True when ``exc``, raised while committing, leaves it unknown whether the transaction was
        committed: the connection died while the server may have committed it. False for an
        answer from the server that says it rolled back (a deadlock, a Galera certification
        failure, a node not ready) and for an engine whose commits cannot be lost."""
        return False

    def is_db_error(self, exc: BaseException) -> bool:
        """An error of the database itself (not a transaction body refusing its input)."""
        return isinstance(exc, self.module.Error) or self.is_connection_error(exc)

    def open_connection(self, **connkw: Any) -> Any:
        """A new DB-API connection (the pool's ``connect``)."""
        return self.module.connect(**connkw)

    def connect(self) -> Any:
        """A plain connection for synchronous tools (backups, tests)."""
        conn = self.open_connection(**self.pool_args(1)["connkw"])
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


class NodeNotReady(Exception):
    """A Galera node that accepted the connection but may not be used (not in the primary
    component, or not synced yet); the engine tries the next server of the URL."""


class MysqlEngine(Engine):
    """MySQL 8 / MariaDB, and a MariaDB Galera cluster (docs/operations.md, Galera).

    On Galera, a transaction whose rows another node changed first fails at commit with a
    deadlock (1213, a certification conflict) and is re-run like any deadlock; a node outside the
    primary component answers 1047 (``WSREP has not yet prepared node for application use``),
    which is handled like a lost connection: the connection is dropped and the next one goes to
    the first server of the URL that is up and ready. Each Galera session reads causally
    (``wsrep_sync_wait`` has its READ bit set): a request sees everything committed on any node
    before it, whichever instance (and node) the farmer's previous request went through.
    """

    name = "mysql"
    dbapi_name = "pymysql"
    batch_updates = True
    commit_can_be_lost = True

    #: lost connection, server gone, can't connect, server shutdown, connection killed, inactive
    #: client dropped; 1047: a Galera node not ready (outside the primary component, or joining)
    CONNECTION_ERRORS = {2003, 2006, 2013, 2014, 2055, 1053, 1927, 4031, 1047}
    #: lock wait timeout, deadlock (on Galera also a certification conflict)
    TRANSIENT_ERRORS = {1205, 1213} | CONNECTION_ERRORS
    #: connection errors that are the server's answer to the COMMIT itself, which it refused (the
    #: transaction is rolled back): a Galera node that is not ready
    REFUSED_COMMIT_ERRORS = {1047}
    #: a server that failed to connect (or was not ready) is tried after the others for this long
    FAILED_HOST_SECONDS = 30.0

    def __init__(self, url: DbUrl, idle_transaction_timeout: int | None = None, read_timeout: int | None = 60):
        super().__init__(url)
        import pymysql

        self.idle_transaction_timeout = idle_transaction_timeout
        #: seconds a statement's answer is waited for (pymysql's read and write timeouts) before the
        #: connection is given up; None: no limit — the schema upgrade's (runtime.py), whose ALTER
        #: TABLE over a large table takes minutes (docs/capacity.md)
        self.read_timeout = read_timeout

        self.module = pymysql
        #: (host, port) → monotonic time it last failed to give a usable connection
        self._failed: dict[tuple[str, int], float] = {}
        self._failed_lock = threading.Lock()

    def host_order(self) -> list[tuple[str, int]]:
        """The URL's servers in the order to try: those that did not fail lately first (URL
        order), then the others, longest-failed first."""
        now = time.monotonic()
        with self._failed_lock:
            failed = {h: t for h, t in self._failed.items() if now - t < self.FAILED_HOST_SECONDS}
        good = [h for h in self.url.hosts if h not in failed]
        return good + sorted((h for h in self.url.hosts if h in failed), key=failed.__getitem__)

    def open_connection(self, **connkw: Any) -> Any:
        """Connect to the first server of the URL that accepts and is ready (``host_order``).
        Raises the last server's error when none is."""
        last: BaseException | None = None
        for host, port in self.host_order():
            try:
                conn = self.module.connect(**{**connkw, "host": host, "port": port})
            except self.module.err.OperationalError as e:
                last = e
                self._mark_failed(host, port)
                continue
            try:
                self._check_galera(conn)
            except (NodeNotReady, self.module.err.MySQLError) as e:
                last = e
                self._mark_failed(host, port)
                try:
                    conn.close()
                except Exception:
                    pass
                continue
            with self._failed_lock:
                self._failed.pop((host, port), None)
            return conn
        if isinstance(last, NodeNotReady):
            raise self.module.err.OperationalError(1047, str(last))
        assert last is not None
        raise last

    def _mark_failed(self, host: str, port: int) -> None:
        with self._failed_lock:
            self._failed[(host, port)] = time.monotonic()

    def _check_galera(self, conn: Any) -> None:
        """On a Galera node (``wsrep_on``): refuse a node that is not ready in the primary
        component, and make the session's reads causal. Anything else: nothing to do."""
        with conn.cursor() as cursor:
            cursor.execute("SHOW VARIABLES LIKE 'wsrep_on'")
            row = cursor.fetchone()
            if row is None or str(row[1]).upper() != "ON":
                return
            cursor.execute("SHOW STATUS WHERE Variable_name IN ('wsrep_ready', 'wsrep_cluster_status')")
            status = {str(k).lower(): str(v) for k, v in cursor.fetchall()}
            if status.get("wsrep_ready") != "ON" or status.get("wsrep_cluster_status") != "Primary":
                raise NodeNotReady(f"Galera node {conn.host}:{conn.port} is not ready "
                                   f"(wsrep_ready {status.get('wsrep_ready')}, "
                                   f"cluster {status.get('wsrep_cluster_status')})")
            cursor.execute("SET SESSION wsrep_sync_wait = @@global.wsrep_sync_wait | 1")

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
                "read_timeout": self.read_timeout,
                "write_timeout": self.read_timeout,
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

    def drops_connection(self, exc: BaseException) -> bool:
        return self.is_connection_error(exc)

    def commit_outcome_unknown(self, exc: BaseException) -> bool:
        """A connection lost (or killed, or a server shutting down) during COMMIT: the server may
        have committed before the acknowledgement was lost, or not."""
        return self.is_connection_error(exc) and self._code(exc) not in self.REFUSED_COMMIT_ERRORS

    def describe(self) -> str:
        hosts = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in self.url.hosts)
        return f"mysql://{self.url.user}:***@{hosts}/{self.url.database}"


def create_engine(url: str, idle_transaction_timeout: int | None = None, read_timeout: int | None = 60) -> Engine:
    """The engine of a database URL (``idle_transaction_timeout``, ``read_timeout``: a server
    engine's, see :attr:`MysqlEngine.idle_transaction_timeout` and :attr:`MysqlEngine.read_timeout`)."""
    parsed = parse_db_url(url)
    if parsed.scheme == "sqlite":
        return SqliteEngine(parsed)
    return MysqlEngine(parsed, idle_transaction_timeout, read_timeout)
