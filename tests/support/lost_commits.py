"""Faults at COMMIT, for the tests of lost commit acknowledgements (``Database.run``).

:class:`CommitFaults` wraps every connection an engine opens: the n-th commit of a transaction that
changed rows (counted from :meth:`CommitFaults.arm`) then fails in one of three ways:

- ``after``: the server commits, then the connection dies before its acknowledgement arrives
  (the client sees a lost connection: the outcome is unknown to it);
- ``before``: the connection dies before COMMIT reaches the server, which rolls back (the client
  sees the same lost connection);
- ``refused``: the server answers COMMIT with a deadlock (1213: a Galera certification failure),
  having rolled back.

A dead connection is closed for good; the pool opens a new one (``InlinePool`` as adbapi does).
:class:`LossySqliteEngine` is SQLite with a connection that can be "lost" the same way, so the
mechanism is tested on both engines.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import pymysql

from downstream_tx.config import Config
from downstream_tx.db import schema
from downstream_tx.db.database import Database
from downstream_tx.db.engine import Engine, SqliteEngine, create_engine
from downstream_tx.db.url import parse_db_url
from downstream_tx.runtime import NOTE_OBSERVERS, Services, build_services
from support import InlinePool, inline_blocking, run

MODES = ("after", "before", "refused")


class LostSqliteConnection(sqlite3.OperationalError):
    """What :class:`LossySqliteEngine` calls a lost connection."""


class LossySqliteEngine(SqliteEngine):
    """SQLite as if its commits could be lost (:class:`LostSqliteConnection`), for the tests of the
    mechanism on both engines."""

    commit_can_be_lost = True

    def is_connection_error(self, exc: BaseException) -> bool:
        return isinstance(exc, LostSqliteConnection)

    def is_transient(self, exc: BaseException) -> bool:
        return super().is_transient(exc) or self.is_connection_error(exc)

    def drops_connection(self, exc: BaseException) -> bool:
        return self.is_connection_error(exc)

    def commit_outcome_unknown(self, exc: BaseException) -> bool:
        return self.is_connection_error(exc)


def lossy_engine(url: str) -> Engine:
    """The engine of ``url``; SQLite as :class:`LossySqliteEngine`."""
    engine = create_engine(url)
    return LossySqliteEngine(parse_db_url(url)) if engine.name == "sqlite" else engine


class CommitFaults:
    """The faults planned for the commits of write transactions on every connection of one engine."""

    def __init__(self, engine: Engine):
        self.engine = engine
        #: n → mode: the n-th write commit counted from the last arm() fails so
        self.plan: dict[int, str] = {}
        self.write_commits = 0
        #: (n, mode) of every fault injected since the last arm()
        self.injected: list[tuple[int, str]] = []
        connect = engine.open_connection
        engine.open_connection = lambda **kw: FaultyConnection(connect(**kw), self)  # type: ignore[method-assign]

    def arm(self, *modes: str, at: int = 1) -> None:
        """From now on, write commits ``at``, ``at + 1``, … fail with ``modes`` in turn."""
        self.plan = {at + i: mode for i, mode in enumerate(modes)}
        self.write_commits = 0
        self.injected = []

    def disarm(self) -> None:
        self.plan = {}

    def next_commit(self, wrote: bool) -> str | None:
        if not wrote:
            return None
        self.write_commits += 1
        mode = self.plan.pop(self.write_commits, None)
        if mode is not None:
            self.injected.append((self.write_commits, mode))
        return mode

    def lost(self) -> Exception:
        if self.engine.name == "sqlite":
            return LostSqliteConnection("connection lost during COMMIT")
        return pymysql.err.OperationalError(2013, "Lost connection to MySQL server during query")

    def refused(self) -> Exception:
        if self.engine.name == "sqlite":
            return sqlite3.OperationalError("database is locked")
        return pymysql.err.OperationalError(1213, "Deadlock found when trying to get lock; try restarting "
                                                  "transaction")


class FaultyCursor:
    def __init__(self, cursor: Any, conn: FaultyConnection):
        self._cursor = cursor
        self._conn = conn

    def execute(self, sql: str, args: Any = None) -> Any:
        self._note(sql)
        return self._cursor.execute(sql, args) if args is not None else self._cursor.execute(sql)

    def executemany(self, sql: str, rows: Any) -> Any:
        self._note(sql)
        return self._cursor.executemany(sql, rows)

    def _note(self, sql: str) -> None:
        if sql.split(None, 1)[0].upper() not in ("SELECT", "SHOW", "SET", "BEGIN", "PRAGMA"):
            self._conn.wrote = True

    def __enter__(self) -> FaultyCursor:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._cursor.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)


class FaultyConnection:
    """A DB-API connection whose commit fails as its :class:`CommitFaults` plans."""

    def __init__(self, conn: Any, faults: CommitFaults):
        self._conn = conn
        self._faults = faults
        self.wrote = False

    def cursor(self, *args: Any) -> FaultyCursor:
        return FaultyCursor(self._conn.cursor(*args), self)

    def commit(self) -> None:
        wrote, self.wrote = self.wrote, False
        mode = self._faults.next_commit(wrote)
        if mode is None:
            return self._conn.commit()
        if mode == "refused":
            self._conn.rollback()
            raise self._faults.refused()
        if mode == "after":
            self._conn.commit()
        # "before": COMMIT never reaches the server, which rolls back when the connection closes
        self._conn.close()
        raise self._faults.lost()

    def rollback(self) -> None:
        self.wrote = False
        self._conn.rollback()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def faulty_db(url: str, clock: Any, retries: int = 3) -> tuple[Database, CommitFaults]:
    """A schema'd database over ``url`` (SQLite: :class:`LossySqliteEngine`) whose commits fail on
    demand; its pool runs transactions inline and reconnects after a lost connection."""
    engine = lossy_engine(url)
    faults = CommitFaults(engine)
    if engine.name == "sqlite":
        import os

        os.makedirs(os.path.dirname(os.path.abspath(engine.url.path)), exist_ok=True)
    db = Database(engine, InlinePool(engine), clock, retries=retries, backoff=0, note_observers=NOTE_OBSERVERS)
    run(db.run("schema", schema.upgrade_txn, schema.load_steps(engine.name)))
    return db, faults


def faulty_node(config: Config, clock: Any) -> tuple[Services, CommitFaults]:
    """Every service of a node over :func:`faulty_db`."""
    db, faults = faulty_db(config.db_url, clock)
    return run(build_services(db, config, clock, inline_blocking)), faults


def settle(d: Any, clock: Any, pump: Any = None) -> Any:
    """The result of ``d`` once the retries' back-offs (0 s on ``clock``) have run."""
    from twisted.python.failure import Failure

    out: list = []
    d.addBoth(out.append)
    for _ in range(1000):
        if out:
            break
        if pump is not None:
            pump()
        clock.advance(0)
    assert out, "the Deferred did not fire"
    if isinstance(out[0], Failure):
        out[0].raiseException()
    return out[0]
