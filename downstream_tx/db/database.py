"""The connection pool and the one ``run`` wrapper every transaction goes through."""

from __future__ import annotations

import itertools
import os
import random
import sys
import threading
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


#: the first words of statements that change rows, and of those that change the schema
ROW_CHANGES = frozenset({"INSERT", "UPDATE", "DELETE", "REPLACE"})
SCHEMA_CHANGES = frozenset({"CREATE", "ALTER", "DROP", "RENAME", "TRUNCATE"})

#: rows (slots) of each kept counter on a server engine (table ``counters``, ``db/counters.py``): a
#: transaction adds to the one slot of its pool thread, so concurrent writers rarely wait on one
#: row's lock; a read sums the slots. SQLite serialises writers: one slot.
COUNTER_SLOTS = 16
_slots = threading.local()
_next_slot = itertools.count(random.randrange(COUNTER_SLOTS))


def counter_slot() -> int:
    """This thread's slot of every counter: pool threads take consecutive slots (from a random
    start in each process, so a node's processes spread over the slots too)."""
    slot = getattr(_slots, "slot", None)
    if slot is None:
        slot = _slots.slot = next(_next_slot) % COUNTER_SLOTS
    return slot


class DatabaseUnavailable(Exception):
    """The database could not be reached (after retries)."""


#: a farmer call over at most this many contracts is a short transaction (:meth:`Database.run_short`:
#: on SQLite it runs on the reactor thread, ~1-3 ms at this size, instead of paying the thread hop);
#: a larger batch goes to the pool so that it never holds the reactor longer
SHORT_BATCH = 100

class Txn:
    """A cursor that speaks the project's one SQL dialect (``?`` placeholders).

    Transaction functions (``*_txn``) receive one of these and nothing else.
    """

    __slots__ = ("_cursor", "_engine", "engine_name", "_track", "wrote", "ddl", "notes", "counts")

    def __init__(self, cursor: Any, engine: Engine, track: bool = False):
        self._cursor = cursor
        self._engine = engine
        self.engine_name = engine.name
        #: with ``track``: whether a statement changed rows (``wrote``) or the schema (``ddl``)
        self._track = track
        self.wrote = False
        self.ddl = False
        #: what the body asked to announce once the transaction commits (:meth:`note`)
        self.notes: list[Any] = []
        #: changes to kept counters not yet written (:meth:`count`)
        self.counts: dict[str, int] = {}

    def note(self, event: Any) -> None:
        """Announce ``event`` (a farmer's change of standing, say) to the database's note observers
        once this transaction has committed: a body has no side effects outside the database, so
        a transaction rolled back or retried announces nothing twice (a retried body notes again;
        a commit found by the lost-commit lookup announces what its own attempt noted)."""
        self.notes.append(event)

    def call_after(self, func: Callable[..., Any], *args: Any) -> None:
        """Call ``func(*args)`` once this transaction has committed (on the thread that ran
        :meth:`Database.run`, after the notes announced before it): an effect outside the database
        (a counter, a cache) that must follow what was committed, not what a rolled-back or
        retried attempt did. Kept with the notes, so the same rules hold (a retried body asks
        again; a commit found by the lost-commit lookup calls what its own attempt asked)."""
        self.notes.append(_After(func, args))

    def count(self, deltas: dict[str, int]) -> None:
        """Add ``deltas`` (``{counter name: change}``) to the kept counters (table ``counters``,
        ``db/counters.py``) in this transaction: gathered here and written by :meth:`flush_counts`
        at the end of the body, in one statement, so the counter rows are locked only from then to
        the commit, and a body rolled back or run again changes them with the rest of its writes."""
        for name, n in deltas.items():
            if n:
                self.counts[name] = self.counts.get(name, 0) + int(n)

    def flush_counts(self) -> None:
        """Write the gathered counter changes: one upsert of ``n = n + ?`` rows (by name: every
        transaction locks them in one order). :class:`Database` calls it after every body."""
        changes = sorted((name, n) for name, n in self.counts.items() if n)
        self.counts = {}
        if not changes:
            return
        slot = 0 if self.engine_name == "sqlite" else counter_slot()
        values = ", ".join(["(?, ?, ?)"] * len(changes))
        upsert = (" ON CONFLICT (name, slot) DO UPDATE SET n = n + excluded.n" if self.engine_name == "sqlite"
                  else " ON DUPLICATE KEY UPDATE n = n + VALUES(n)")
        self.execute(f"INSERT INTO counters (name, slot, n) VALUES {values}{upsert}",
                     [v for name, n in changes for v in (name, slot, n)])

    def _note(self, sql: str) -> None:
        word = sql.split(None, 1)[0].upper() if sql else ""
        if word in ROW_CHANGES:
            self.wrote = True
        elif word in SCHEMA_CHANGES:
            self.ddl = True

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Txn:
        if self._track:
            self._note(sql)
        self._cursor.execute(self._engine.convert(sql), tuple(args))
        return self

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        rows = [tuple(r) for r in rows]
        if rows:
            if self._track:
                self._note(sql)
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
                     where: str = "", chunk: int = 500, match: Sequence[str] = (), key: str = "id") -> int:
        """Set per-row values on many rows; ``rows`` are ``(id, value_0, value_1, …, match_0, …)``
        (``key``: the column the first value names, ``id`` unless told).

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
                                 [f"t.{c} = v.v{i}" for i, c in enumerate(columns)], [key, *match], n, rows, where, (),
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
        self.ddl = True
        for statement in split_statements(text):
            self._cursor.execute(statement)


def split_statements(text: str) -> list[str]:
    lines = [line for line in text.splitlines() if not line.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";\n") if s.strip().rstrip(";").strip()]


def outcome_id(now: float) -> bytes:
    """A new transaction id (table ``txn_outcomes``): milliseconds since the epoch (8 bytes,
    big-endian: ids sort by time) and 8 random bytes."""
    return int(now * 1000).to_bytes(8, "big") + os.urandom(8)


def record_outcome_txn(txn: Txn, txn_id: bytes, attempt: int) -> None:
    """Write the transaction's id in its own commit (its last statement)."""
    txn.execute("INSERT INTO txn_outcomes (id, attempt) VALUES (?, ?)", (txn_id, attempt))


def committed_attempt_txn(txn: Txn, txn_id: bytes) -> int | None:
    """The attempt of transaction ``txn_id`` that committed, or None. The read locks: a commit of
    that id still under way on the server (its connection lost) is waited for, not missed."""
    row = txn.execute("SELECT attempt FROM txn_outcomes WHERE id = ?" + txn.for_update(), (txn_id,)).fetchone()
    return None if row is None else int(row[0])


class _Outcome:
    """The attempts of one :meth:`Database.run` on an engine whose commits can be lost: the
    transaction's id, each attempt's result (kept until the transaction's outcome is known), and
    whether an attempt's commit outcome is unknown (``uncertain``: from then on every attempt
    first looks the id up)."""

    __slots__ = ("id", "results", "finished", "uncertain")

    def __init__(self, txn_id: bytes):
        self.id = txn_id
        self.results: dict[int, Any] = {}
        #: the attempt whose body finished and recorded the id (its COMMIT was being sent)
        self.finished: int | None = None
        self.uncertain = False


class _After(NamedTuple):
    """A call a transaction asked for after its commit (:meth:`Txn.call_after`)."""

    func: Callable[..., Any]
    args: tuple


class _Noted(NamedTuple):
    """A transaction's result and the events it noted."""

    result: Any
    notes: list[Any]


class _Committed(Exception):
    """An earlier attempt of the transaction committed: its result is the transaction's."""

    def __init__(self, attempt: int):
        super().__init__(f"attempt {attempt} committed")
        self.attempt = attempt


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
    re-runs it after a lost connection or deadlock, with a short back-off on ``clock``. A body
    may be re-run only when its earlier run is known not to have committed: where the engine's
    commits can be lost (:attr:`Engine.commit_can_be_lost`, a server), a transaction that changed
    rows writes its id to ``txn_outcomes`` in its own commit, and when the acknowledgement of a
    COMMIT is lost the next attempt first looks the id up. Found: the transaction committed, and
    the result of the attempt that committed is returned (the body is not run again). Not found:
    it rolled back, and the body runs again. The client is told what was committed.
    """

    #: inline commits after which the pool's connection is asked for a passive WAL checkpoint
    CHECKPOINT_EVERY = 1000

    def __init__(self, engine: Engine, pool: Any, clock: Any, retries: int = 3, backoff: float = 0.2,
                 inline: bool = False, record_outcomes: bool = True,
                 note_observers: Iterable[Callable[[Any], None]] = (), lock: Any = None,
                 observers: Iterable[Callable[[str, float, bool], None]] = ()):
        self.engine = engine
        #: whether write transactions record their id (the engine's commits can be lost, and the
        #: schema has ``txn_outcomes``: off only for tests that build an older schema)
        self.record_outcomes = record_outcomes and engine.commit_can_be_lost
        self.pool = pool
        self.clock = clock
        self.retries = retries
        self.backoff = backoff
        #: observers called with (desc, seconds, ok) after every transaction (metrics)
        self.observers: list[Callable[[str, float, bool], None]] = list(observers)
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
        #: transactions whose COMMIT acknowledgement was lost, by what the lookup found
        self.lost_commits = {"committed": 0, "rolled_back": 0, "unknown": 0}
        #: called with each event a committed transaction noted (:meth:`Txn.note`), in order
        self.note_observers: list[Callable[[Any], None]] = list(note_observers)
        #: the daemon's lock on its SQLite file (``db/lock.py``), released when the pool is closed
        self.lock: Any = lock

    @classmethod
    def connect(cls, engine: Engine, reactor: Any, pool_size: int = 5, retries: int = 3,
                note_observers: Iterable[Callable[[Any], None]] = (), lock: Any = None,
                observers: Iterable[Callable[[str, float, bool], None]] = ()) -> Database:
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
        return cls(engine, pool, reactor, retries=retries, inline=engine.inline, note_observers=note_observers,
                   lock=lock, observers=observers)

    def _body(self, cursor: Any, func: Callable[..., T], args: tuple, kwargs: dict) -> T:
        """One transaction's body on a pool thread, its result alone (tests call it on a pool)."""
        return self._attempt(cursor, func, args, kwargs).result

    def _attempt(self, cursor: Any, func: Callable[..., T], args: tuple, kwargs: dict,
                 outcome: _Outcome | None = None, attempt: int = 0) -> _Noted:
        """One attempt of a transaction on a pool thread: the body's result and what it noted."""
        if self.inline and not cursor.connection.in_transaction:
            # the inline connection writes too: a pooled transaction takes the write lock before
            # its first read (Python's sqlite3 would begin only at the first write, so what the
            # body read could change under it before it writes)
            cursor.execute("BEGIN IMMEDIATE")
        if outcome is None:
            txn = Txn(cursor, self.engine)
            result = func(txn, *args, **kwargs)
            txn.flush_counts()
            return _Noted(result, txn.notes)
        outcome.finished = None
        txn = Txn(cursor, self.engine, track=True)
        if outcome.uncertain:
            committed = committed_attempt_txn(txn, outcome.id)
            if committed is not None:
                raise _Committed(committed)
        result = func(txn, *args, **kwargs)
        txn.flush_counts()
        # a schema change commits on its own on a server (and may create the table): not recorded;
        # schema upgrades are idempotent by their version check
        if txn.wrote and not txn.ddl:
            try:
                record_outcome_txn(txn, outcome.id, attempt)
            except self.engine.module.IntegrityError:
                # the id is there after all: an earlier attempt committed (on a Galera cluster, its
                # commit may have been under way on another node when this attempt looked)
                committed = committed_attempt_txn(txn, outcome.id)
                if committed is None:
                    raise
                raise _Committed(committed) from None
            outcome.results[attempt] = _Noted(result, txn.notes)
            outcome.finished = attempt
        return _Noted(result, txn.notes)

    @defer.inlineCallbacks
    def run(self, desc: str, func: Callable[..., T], *args: Any, **kwargs: Any):
        outcome = _Outcome(outcome_id(self.clock.seconds())) if self.record_outcomes else None
        attempt = 0
        while True:
            started = time.monotonic()
            try:
                self.pooled += 1
                try:
                    out = yield self.pool.runInteraction(self._attempt, func, args, kwargs, outcome, attempt)
                finally:
                    self.pooled -= 1
                # (a stand-in pool of the tests answers with a bare result)
                result, notes = (out.result, out.notes) if isinstance(out, _Noted) else (out, [])
            except _Committed as committed:
                self._observe(desc, started, True)
                return self._committed_result(desc, outcome, committed.attempt)
            except Exception as e:
                # a body that refused its input (bad token, …) rolled back on a healthy database
                self._observe(desc, started, not self.engine.is_db_error(e))
                if outcome is not None and outcome.finished == attempt and self.engine.commit_outcome_unknown(e):
                    if not outcome.uncertain:
                        log.warn("transaction {desc}: the acknowledgement of its commit was lost ({error}); "
                                 "looking up whether it committed", desc=desc, error=e.__class__.__name__)
                    outcome.uncertain = True
                transient = self.engine.is_transient(e)
                if not transient or attempt >= self.retries:
                    if outcome is not None and outcome.uncertain:
                        committed_attempt = yield self._resolve(desc, outcome)
                        if committed_attempt is not None:
                            return self._committed_result(desc, outcome, committed_attempt)
                    if self.engine.is_connection_error(e):
                        raise DatabaseUnavailable(f"{desc}: database unavailable ({e.__class__.__name__})") from e
                    raise
                attempt += 1
                log.warn("transaction {desc} failed ({error}); retry {attempt}/{retries}",
                         desc=desc, error=e.__class__.__name__, attempt=attempt, retries=self.retries)
                yield task.deferLater(self.clock, self.backoff * attempt, lambda: None)
                continue
            if outcome is not None and outcome.uncertain:
                # this attempt looked first: the lost commit had not happened
                self.lost_commits["rolled_back"] += 1
                log.info("transaction {desc}: its lost commit had not happened; run again", desc=desc)
            self._observe(desc, started, True)
            self.last_success = self.clock.seconds()
            self._announce(notes)
            return result

    def _announce(self, notes: list[Any]) -> None:
        """Tell the note observers each event a committed transaction noted, and make the calls it
        asked for (:meth:`Txn.call_after`), in order; a failing one is logged, the rest still run."""
        for note in notes:
            if isinstance(note, _After):
                try:
                    note.func(*note.args)
                except Exception:
                    log.failure("a call after commit failed: {func!r}", func=note.func)
                continue
            for observer in self.note_observers:
                try:
                    observer(note)
                except Exception:
                    log.failure("a note observer failed on {note!r}", note=note)

    def _committed_result(self, desc: str, outcome: _Outcome, attempt: int) -> Any:
        self.lost_commits["committed"] += 1
        self.last_success = self.clock.seconds()
        log.info("transaction {desc}: its commit had happened (attempt {attempt}); its result stands",
                 desc=desc, attempt=attempt + 1)
        result, notes = outcome.results[attempt]
        self._announce(notes)
        return result

    @defer.inlineCallbacks
    def _resolve(self, desc: str, outcome: _Outcome):
        """The attempt that committed (None: none did) of a transaction that gave up with a commit
        outcome unknown, looked up in transactions of their own (retried as :meth:`run` retries);
        :class:`DatabaseUnavailable` when the database cannot say."""
        for tries in range(self.retries + 1):
            try:
                committed = yield self.pool.runInteraction(self._lookup, outcome.id)
            except Exception as e:
                if not self.engine.is_transient(e) or tries >= self.retries:
                    self.lost_commits["unknown"] += 1
                    log.error("transaction {desc}: whether it committed is unknown ({error})", desc=desc,
                              error=e.__class__.__name__)
                    raise DatabaseUnavailable(f"{desc}: database unavailable, the outcome of its commit is "
                                              f"unknown ({e.__class__.__name__})") from e
                yield task.deferLater(self.clock, self.backoff * (tries + 1), lambda: None)
                continue
            if committed is None:
                self.lost_commits["rolled_back"] += 1
                log.info("transaction {desc}: its lost commit had not happened", desc=desc)
            return committed

    def _lookup(self, cursor: Any, txn_id: bytes) -> int | None:
        return committed_attempt_txn(Txn(cursor, self.engine), txn_id)

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
            txn.flush_counts()
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
