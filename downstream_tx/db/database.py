"""The connection pool and the one ``run`` wrapper every transaction goes through."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple, TypeVar

from twisted.enterprise import adbapi
from twisted.internet import defer, task
from twisted.logger import Logger

from downstream_tx.db.engine import Engine

T = TypeVar("T")
log = Logger()

#: ids per ``IN (…)`` list: every batched statement of the stores uses it
IN_BATCH = 500


class DatabaseUnavailable(Exception):
    """The database could not be reached (after retries)."""


class Txn:
    """A cursor that speaks the project's one SQL dialect (``?`` placeholders).

    Transaction functions (``*_txn``) receive one of these and nothing else.
    """

    __slots__ = ("_cursor", "_engine", "engine_name", "notes")

    def __init__(self, cursor: Any, engine: Engine):
        self._cursor = cursor
        self._engine = engine
        self.engine_name = engine.name
        #: what the body asked to announce once the transaction commits (:meth:`note`)
        self.notes: list[Any] = []

    def note(self, event: Any) -> None:
        """Announce ``event`` (a farmer's change of standing, say) to the database's note observers
        once this transaction has committed: a body has no side effects outside the database, so
        a transaction rolled back or retried announces nothing twice (a retried body notes again)."""
        self.notes.append(event)

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Txn:
        self._cursor.execute(self._engine.convert(sql), tuple(args))
        return self

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        rows = [tuple(r) for r in rows]
        if rows:
            self._cursor.executemany(self._engine.convert(sql), rows)

    def fetchone(self) -> tuple | None:
        return self._cursor.fetchone()

    def fetchall(self) -> list[tuple]:
        return list(self._cursor.fetchall())

    def scalar(self, sql: str, args: Sequence[Any] = ()) -> Any:
        row = self.execute(sql, args).fetchone()
        return None if row is None else row[0]

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int:
        return self._cursor.lastrowid

    def update_by_id(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]],
                     where: str = "", chunk: int = 500, match: Sequence[str] = ()) -> int:
        """Set per-row values on many rows; ``rows`` are ``(id, value_0, value_1, …, match_0, …)``.

        ``match`` names columns that must still hold the row's ``match_i`` value (a per-row guard,
        ``=``: a NULL never matches). In-process SQLite runs one cheap statement per row. A server
        engine, where each statement is a round trip, gets one ``UPDATE t JOIN (SELECT ? AS id, ? AS
        v0 … UNION ALL …) v`` per ``chunk`` rows. ``where`` must not name ``id`` (ambiguous in the
        join). Returns rows changed.
        """
        n = len(columns)
        if not self._engine.batch_updates:
            rows = [(*row[1:n + 1], row[0], *row[n + 1:]) for row in rows]
        return self._update_rows(table, [f"{c} = ?" for c in columns],
                                 [f"t.{c} = v.v{i}" for i, c in enumerate(columns)], ["id", *match], n, rows, where, (),
                                 chunk)

    def update_matching(self, table: str, sets: Sequence[str], keys: Sequence[str], rows: Sequence[Sequence[Any]],
                        where: str = "", args: Sequence[Any] = (), chunk: int = 500) -> int:
        """``UPDATE table SET sets`` (expressions over the row's own columns, unqualified) on every
        row whose ``keys`` columns equal one of ``rows`` (tuples of key values) and that meets
        ``where`` (``?`` placeholders: ``args``). One cheap statement per row on in-process SQLite,
        one ``UPDATE … JOIN`` per ``chunk`` rows on a server engine. Returns rows changed."""
        if not self._engine.batch_updates:
            rows = [(*row, *args) for row in rows]
        return self._update_rows(table, list(sets), [f"t.{s}" for s in sets], list(keys), 0, rows, where, args, chunk)

    def _update_rows(self, table: str, sets: list[str], joined_sets: list[str], keys: list[str], n: int,
                     rows: Sequence[Sequence[Any]], where: str, args: Sequence[Any], chunk: int) -> int:
        """Per-row UPDATEs: rows are ``(value_0 … value_n-1, key_0 …)`` (plus ``args``) in SQLite's
        executemany form, ``(key_0, value_0 …, key_1 …)`` for the server engine's join (``joined_sets``
        name the values ``v.v<i>``, the row's columns ``t.<column>``)."""
        if not rows:
            return 0
        if not self._engine.batch_updates:
            extra = f" AND {where}" if where else ""
            self.executemany(f"UPDATE {table} SET {', '.join(sets)} WHERE "
                             + " AND ".join(f"{k} = ?" for k in keys) + extra, rows)
            return self.rowcount
        changed = 0
        names = [f"k{i}" for i in range(len(keys))]
        # the server engine's row: the first key, the values, the other keys (update_by_id's order)
        order = [names[0]] + [f"v{i}" for i in range(n)] + names[1:]
        first = "SELECT " + ", ".join(f"? AS {name}" for name in order)
        other = "SELECT " + ", ".join(["?"] * len(order))
        on = " AND ".join(f"t.{k} = v.{name}" for k, name in zip(keys, names))
        joined_where = f" WHERE {where}" if where else ""
        for start in range(0, len(rows), chunk):
            part = rows[start:start + chunk]
            values = " UNION ALL ".join([first] + [other] * (len(part) - 1))
            sql = f"UPDATE {table} t JOIN ({values}) v ON {on} SET {', '.join(joined_sets)}{joined_where}"
            changed += self.execute(sql, [value for row in part for value in row] + list(args)).rowcount
        return changed

    def in_list(self, values: Sequence[Any]) -> str:
        """``(?, ?, …)`` for an IN clause of ``values``."""
        return "(" + ", ".join(["?"] * len(values)) + ")"

    def update_in(self, sql: str, ids: Sequence[Any], before: Sequence[Any] = (), after: Sequence[Any] = ()) -> int:
        """Run ``sql``, whose ``{ids}`` is an IN list, over ``ids`` ``IN_BATCH`` at a time (one statement
        per batch, whatever the engine); its arguments are ``before``, the batch, ``after``. Returns
        the rows changed."""
        changed = 0
        for start in range(0, len(ids), IN_BATCH):
            part = list(ids[start:start + IN_BATCH])
            changed += max(self.execute(sql.format(ids=self.in_list(part)), [*before, *part, *after]).rowcount, 0)
        return changed

    def select_in(self, sql: str, ids: Sequence[Any], before: Sequence[Any] = (),
                  after: Sequence[Any] = ()) -> list[tuple]:
        """The rows of ``sql``, whose ``{ids}`` is an IN list, over ``ids`` ``IN_BATCH`` at a time."""
        rows: list[tuple] = []
        for start in range(0, len(ids), IN_BATCH):
            part = list(ids[start:start + IN_BATCH])
            rows += self.execute(sql.format(ids=self.in_list(part)), [*before, *part, *after]).fetchall()
        return rows

    def for_update(self) -> str:
        """The row-lock suffix for SELECT … (empty on SQLite, whose writes are serialised)."""
        return "" if self.engine_name == "sqlite" else " FOR UPDATE"

    def script(self, text: str) -> None:
        """Run a schema script: statements separated by ``;`` at line ends."""
        for statement in split_statements(text):
            self._cursor.execute(statement)


def split_statements(text: str) -> list[str]:
    lines = [line for line in text.splitlines() if not line.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";\n") if s.strip().rstrip(";").strip()]


class _Noted(NamedTuple):
    """A transaction's result and the events it noted."""

    result: Any
    notes: list[Any]


class _Dbapi:
    """The DB-API module as the pool sees it, with ``connect`` going through the engine (which
    picks a server of a multi-server URL, see :meth:`Engine.open_connection`)."""

    def __init__(self, engine: Engine):
        self._engine = engine

    def connect(self, *args: Any, **kwargs: Any) -> Any:
        return self._engine.open_connection(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine.module, name)


class _Connection(adbapi.Connection):
    """adbapi's connection wrapper, except that after an error the engine says ruins the
    connection (lost, or a Galera node that left the cluster) it is closed at once and quietly:
    the next transaction on the thread opens a new one (perhaps to another server). adbapi
    itself would first try a rollback and ``SELECT 1`` on it and log a traceback."""

    def rollback(self) -> None:
        error = sys.exc_info()[1]  # called while adbapi handles the transaction's exception
        engine = getattr(self._pool, "downstream_engine", None)
        if error is not None and engine is not None and engine.drops_connection(error):
            conn = self._pool.connections.pop(self._pool.threadID(), None)
            if conn is not None:
                try:
                    conn.close()
                except Exception:  # a connection already closed by the driver
                    pass
            return
        super().rollback()


class Database:
    """An adbapi pool (or anything with the same ``runInteraction``) plus retry policy.

    ``run(desc, func, *args)`` runs ``func(txn, *args)`` in one transaction on a pool thread and
    re-runs it (the bodies are idempotent) after a lost connection or deadlock, with a short back-off
    on ``clock``.
    """

    #: inline commits after which the pool's connection is asked for a passive WAL checkpoint
    CHECKPOINT_EVERY = 1000

    def __init__(self, engine: Engine, pool: Any, clock: Any, retries: int = 3, backoff: float = 0.2,
                 inline: bool = False):
        self.engine = engine
        self.pool = pool
        self.clock = clock
        self.retries = retries
        self.backoff = backoff
        #: observers called with (desc, seconds, ok) after every transaction (metrics)
        self.observers: list[Callable[[str, float, bool], None]] = []
        #: called with each event a committed transaction noted (:meth:`Txn.note`), in order
        self.note_observers: list[Callable[[Any], None]] = []
        self.last_success: float | None = None
        #: whether :meth:`run_short` may run transactions on the calling thread (the engine's
        #: :meth:`~Engine.connect_inline` connection, opened at the first use)
        self.inline = inline
        self._inline_conn: Any = None
        #: transactions handed to the pool and not finished (while any is, run_short uses the pool)
        self.pooled = 0
        #: transactions run inline, and those that found the database locked and went to the pool
        self.inline_runs = 0
        self.inline_busy = 0
        self._since_checkpoint = 0
        #: the daemon's lock on its SQLite file (``db/lock.py``), released when the pool is closed
        self.lock: Any = None

    @classmethod
    def connect(cls, engine: Engine, reactor: Any, pool_size: int = 5, retries: int = 3) -> Database:
        args = engine.pool_args(pool_size)
        pool = adbapi.ConnectionPool(
            engine.dbapi_name,
            cp_min=args["cp_min"],
            cp_max=args["cp_max"],
            cp_openfun=engine.on_connect,
            cp_reconnect=True,
            cp_noisy=False,
            cp_reactor=reactor,
            **args["connkw"],
        )
        pool.dbapi = _Dbapi(engine)
        pool.connectionFactory = _Connection
        pool.downstream_engine = engine
        return cls(engine, pool, reactor, retries=retries, inline=engine.inline)

    def _txn(self, cursor: Any) -> Txn:
        if self.inline and not cursor.connection.in_transaction:
            # the inline connection writes too: a pooled transaction takes the write lock before
            # its first read (Python's sqlite3 would begin only at the first write, so what the
            # body read could change under it before it writes)
            cursor.execute("BEGIN IMMEDIATE")
        return Txn(cursor, self.engine)

    def _body(self, cursor: Any, func: Callable[..., T], args: tuple, kwargs: dict) -> T:
        """One transaction's body on a pool thread (tools and tests call it on a pool directly)."""
        return func(self._txn(cursor), *args, **kwargs)

    def _noted_body(self, cursor: Any, func: Callable[..., T], args: tuple, kwargs: dict) -> _Noted:
        """:meth:`_body`, with what it noted (:meth:`Txn.note`), for :meth:`run` to announce."""
        txn = self._txn(cursor)
        return _Noted(func(txn, *args, **kwargs), txn.notes)

    def _announce(self, notes: list[Any]) -> None:
        for note in notes:
            for observer in self.note_observers:
                try:
                    observer(note)
                except Exception:
                    log.failure("a note observer failed on {note!r}", note=note)

    @defer.inlineCallbacks
    def run(self, desc: str, func: Callable[..., T], *args: Any, **kwargs: Any):
        attempt = 0
        while True:
            started = time.monotonic()
            try:
                self.pooled += 1
                try:
                    out = yield self.pool.runInteraction(self._noted_body, func, args, kwargs)
                finally:
                    self.pooled -= 1
                result, notes = (out.result, out.notes) if isinstance(out, _Noted) else (out, [])
            except Exception as e:
                # a body that refused its input (bad token, …) rolled back on a healthy database
                self._observe(desc, started, not self.engine.is_db_error(e))
                transient = self.engine.is_transient(e)
                if not transient or attempt >= self.retries:
                    if self.engine.is_connection_error(e):
                        raise DatabaseUnavailable(f"{desc}: database unavailable ({e.__class__.__name__})") from e
                    raise
                attempt += 1
                log.warn("transaction {desc} failed ({error}); retry {attempt}/{retries}",
                         desc=desc, error=e.__class__.__name__, attempt=attempt, retries=self.retries)
                yield task.deferLater(self.clock, self.backoff * attempt, lambda: None)
                continue
            self._observe(desc, started, True)
            self.last_success = self.clock.seconds()
            self._announce(notes)
            return result

    def run_short(self, desc: str, func: Callable[..., T], *args: Any, **kwargs: Any) -> defer.Deferred:
        """:meth:`run` for a transaction of a few indexed statements (a farmer's single call).

        On SQLite, when no pooled transaction is in flight, it runs at once on the calling thread —
        the reactor's — on a connection of its own: ``BEGIN IMMEDIATE`` with a busy timeout of 0
        takes the write lock or fails at once, so it never waits. A locked database (a pooled
        transaction, another process) sends it to the pool as :meth:`run` (its waits, retries and
        back-off). The thread hop costs more than such a transaction: the hand-off to the pool's
        thread, the waker and the callback on the reactor thread. Observers see it as any
        transaction; a locked attempt is not a transaction (nothing ran). Long transactions (the
        timer passes, the pool refill, batches) must use :meth:`run`: this one blocks the reactor.
        """
        if not self.inline:
            return self.run(desc, func, *args, **kwargs)
        started = time.monotonic()
        conn = self._inline_conn
        try:
            if conn is None:
                conn = self._inline_conn = self.engine.connect_inline()
            conn.execute("BEGIN IMMEDIATE")
        except Exception as e:
            if not self.engine.is_transient(e):
                log.warn("inline transaction {desc} could not begin ({error}); using the pool", desc=desc,
                         error=e.__class__.__name__)
            self.inline_busy += 1
            return self.run(desc, func, *args, **kwargs)
        txn = Txn(conn.cursor(), self.engine)
        try:
            result = func(txn, *args, **kwargs)
            conn.execute("COMMIT")
        except Exception as e:
            try:
                conn.execute("ROLLBACK")
            except Exception:
                pass  # pragma: no mutate (a failed COMMIT may have ended the transaction already)
            if self.engine.is_transient(e):  # locked after all: nothing was committed
                self.inline_busy += 1
                return self.run(desc, func, *args, **kwargs)
            self._observe(desc, started, not self.engine.is_db_error(e))
            return defer.fail()
        self.inline_runs += 1
        self._observe(desc, started, True)
        self.last_success = self.clock.seconds()
        self._announce(txn.notes)
        self._since_checkpoint += 1
        if self._since_checkpoint >= self.CHECKPOINT_EVERY:
            self._since_checkpoint = 0
            self.pool.runInteraction(lambda cursor: cursor.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                                     ).addErrback(lambda f: log.failure("WAL checkpoint failed", f))
        return defer.succeed(result)

    def _observe(self, desc: str, started: float, ok: bool) -> None:
        elapsed = time.monotonic() - started
        for observer in self.observers:
            observer(desc, elapsed, ok)

    def close(self) -> None:
        if self._inline_conn is not None:
            self._inline_conn.close()
            self._inline_conn = None
        close = getattr(self.pool, "close", None)
        if close is not None and getattr(self.pool, "running", True):
            close()
        if self.lock is not None:
            self.lock.release()
