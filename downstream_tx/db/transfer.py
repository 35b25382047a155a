"""The whole node state, table by table, in a form both engines share: what ``downstream-admin copy``,
``backup`` and ``restore`` move (``downstream_tx/lifecycle/``).

Nothing here names a table. The tables, their columns, primary keys and foreign keys come from the
database's own catalogue (SQLite's ``sqlite_master`` and pragmas, InnoDB's ``information_schema``),
so tables added by later schema steps are moved too; the order respects the foreign keys (a table
after every table it references). ``schema_version`` is the schema's own bookkeeping: the version is
carried separately and the target's schema is made by the schema steps.

Values are *canonical*: each column has a kind (integer, real, text, char, blob, by SQLite's type
affinity rules applied to either engine's declared type) and every value is converted to its kind's
Python type (``int``, ``float``, ``str``, ``bytes`` or None), so the same row reads the same from
either engine: a SQLite ``DOUBLE`` holding ``5`` is ``5.0``, MySQL's ``-0.0`` is ``0.0``, a ``CHAR``
loses the trailing spaces MySQL strips. A table's checksum is the sum modulo 2**256 of the SHA-256 of
each canonical row (columns by name, each value typed and length-prefixed): it does not depend on the
order rows are read in, and means the same on both engines.

Reading is done inside one snapshot transaction (SQLite ``BEGIN`` on its WAL file; InnoDB ``REPEATABLE
READ`` + ``START TRANSACTION WITH CONSISTENT SNAPSHOT``), so a live node is read as of one moment;
large tables are read in pages by primary key (memory stays flat). Writing goes to an *empty* target
(no tables at all): its schema is made by the schema steps, the rows they seed are cleared, the pages
are inserted parents first, the id sequences are carried over (ids are never reused), and every
table's count and checksum are read back and compared. A failed write leaves the target as empty as
it was: a SQLite target is built in a temporary file renamed into place at the end, a MySQL target's
tables are dropped.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from downstream_tx.db import schema
from downstream_tx.db.database import Txn
from downstream_tx.db.engine import Engine, create_engine
from downstream_tx.db.files import stored_chunks_txn
from downstream_tx.db.lease import JOBS, LeaseState, state_txn
from downstream_tx.private import create_private_file, make_private_dirs

#: column kinds
INTEGER, REAL, TEXT, CHAR, BLOB = "integer", "real", "text", "char", "blob"
KINDS = (INTEGER, REAL, TEXT, CHAR, BLOB)
#: the schema's own table: never moved as data
SCHEMA_TABLE = "schema_version"
#: rows read or written per statement
PAGE = 500
MODULUS = 1 << 256


class TransferError(Exception):
    """The move cannot be done as asked (the message says why and what to do); nothing was changed
    in the target."""


# --- the catalogue ----------------------------------------------------------------------------------

def kind_of(declared: str) -> str:
    """A column's kind from its declared type (SQLite's affinity rules, which also classify MySQL's
    type names): ``INT`` → integer; ``CHAR(n)`` → char (fixed width: MySQL strips trailing spaces),
    other ``CHAR``/``TEXT``/``CLOB`` → text; ``BLOB``/``BINARY`` → blob; anything else → real."""
    text = declared.upper()
    if "INT" in text:
        return INTEGER
    if "BINARY" in text or "BLOB" in text or not text.strip():
        return BLOB
    if text.startswith("CHAR") or text.startswith("NCHAR"):
        return CHAR
    if "CHAR" in text or "TEXT" in text or "CLOB" in text:
        return TEXT
    return REAL


@dataclass(frozen=True)
class Table:
    """A table as the catalogue describes it: columns ``(name, kind)`` sorted by name (so that both
    engines agree whatever order the columns were added in), its primary key and the tables its
    foreign keys reference."""

    name: str
    columns: tuple[tuple[str, str], ...]
    primary_key: tuple[str, ...]
    references: tuple[str, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c for c, _ in self.columns)

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(k for _, k in self.columns)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "columns": [list(c) for c in self.columns],
                "primary_key": list(self.primary_key), "references": list(self.references)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Table:
        columns = tuple((str(n), str(k)) for n, k in d["columns"])
        if any(k not in KINDS for _, k in columns):
            raise TransferError(f"table {d['name']}: unknown column kind")
        return cls(str(d["name"]), columns, tuple(d["primary_key"]), tuple(d.get("references", ())))


def table_names_txn(txn: Txn) -> list[str]:
    """Every table of the database (the schema's own included; SQLite's internal ones not)."""
    if txn.engine_name == "sqlite":
        rows = txn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
                           "ORDER BY name").fetchall()
    else:
        rows = txn.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE() "
                           "ORDER BY table_name").fetchall()
    return [str(r[0]) for r in rows]


def _sqlite_table(txn: Txn, name: str) -> Table:
    info = txn.execute(f'PRAGMA table_info("{name}")').fetchall()  # cid, name, type, notnull, default, pk
    columns = tuple(sorted((str(r[1]), kind_of(str(r[2] or ""))) for r in info))
    key = tuple(str(r[1]) for r in sorted((r for r in info if r[5]), key=lambda r: r[5]))
    refs = {str(r[2]) for r in txn.execute(f'PRAGMA foreign_key_list("{name}")').fetchall()}
    return Table(name, columns, key, tuple(sorted(refs - {name})))


def _mysql_tables(txn: Txn, names: Sequence[str]) -> list[Table]:
    columns: dict[str, list[tuple[str, str]]] = {n: [] for n in names}
    for table, column, declared in txn.execute(
            "SELECT table_name, column_name, column_type FROM information_schema.columns "
            # a generated column (files.missing) is the database's own: not copied (SQLite's
            # table_info does not list one either)
            "WHERE table_schema = DATABASE() AND is_generated = 'NEVER'").fetchall():
        if table in columns:
            columns[table].append((str(column), kind_of(str(declared))))
    keys: dict[str, list[tuple[int, str]]] = {n: [] for n in names}
    refs: dict[str, set[str]] = {n: set() for n in names}
    for table, column, position, constraint, referenced in txn.execute(
            "SELECT table_name, column_name, ordinal_position, constraint_name, referenced_table_name "
            "FROM information_schema.key_column_usage WHERE table_schema = DATABASE()").fetchall():
        if table not in keys:
            continue
        if constraint == "PRIMARY":
            keys[table].append((int(position), str(column)))
        elif referenced is not None and referenced != table:
            refs[table].add(str(referenced))
    return [Table(n, tuple(sorted(columns[n])), tuple(c for _, c in sorted(keys[n])), tuple(sorted(refs[n])))
            for n in names]


def catalogue_txn(txn: Txn) -> list[Table]:
    """The node's tables (all but ``schema_version``), each after the tables it references."""
    names = [n for n in table_names_txn(txn) if n != SCHEMA_TABLE]
    if txn.engine_name == "sqlite":
        tables = [_sqlite_table(txn, n) for n in names]
    else:
        tables = _mysql_tables(txn, names)
    return in_reference_order(tables)


def in_reference_order(tables: Sequence[Table]) -> list[Table]:
    """``tables`` with every table after the tables it references (names break ties, so the order
    is the same on both engines). A reference to a table that is not there is ignored; a cycle is an
    error."""
    by_name = {t.name: t for t in tables}
    done: list[Table] = []
    placed: set[str] = set()
    waiting = sorted(by_name)
    while waiting:
        ready = [n for n in waiting if all(r in placed or r not in by_name for r in by_name[n].references)]
        if not ready:
            raise TransferError(f"the foreign keys of tables {', '.join(waiting)} form a cycle")
        for name in ready:
            done.append(by_name[name])
            placed.add(name)
        waiting = [n for n in waiting if n not in placed]
    return done


# --- canonical values and checksums -----------------------------------------------------------------

def canonical(kind: str, value: Any) -> Any:
    """``value`` as its column kind's Python type (see the module's docstring); None stays None."""
    if value is None:
        return None
    if kind == INTEGER:
        if isinstance(value, (bytes, bytearray, memoryview)):
            value = bytes(value).decode("ascii")
        if isinstance(value, float):
            if not value.is_integer():
                raise TransferError(f"{value!r} is not a whole number")
            return int(value)
        return int(value)
    if kind == REAL:
        if isinstance(value, (bytes, bytearray, memoryview)):
            value = bytes(value).decode("ascii")
        return float(value) + 0.0  # -0.0 → 0.0 (MySQL stores no negative zero)
    if kind in (TEXT, CHAR):
        if isinstance(value, (bytes, bytearray, memoryview)):
            value = bytes(value).decode("utf-8")
        elif isinstance(value, float):
            value = repr(value)
        text = str(value)
        return text.rstrip(" ") if kind == CHAR else text
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (int, float)):
        return str(value).encode("ascii")
    return bytes(value)


def canonical_row(kinds: Sequence[str], row: Sequence[Any]) -> tuple:
    return tuple(canonical(k, v) for k, v in zip(kinds, row))


def _encoded(value: Any) -> bytes:
    if value is None:
        return b"N"
    if isinstance(value, int):
        data, tag = str(value).encode("ascii"), b"i"
    elif isinstance(value, float):
        data, tag = value.hex().encode("ascii"), b"f"
    elif isinstance(value, str):
        data, tag = value.encode("utf-8"), b"s"
    else:
        data, tag = value, b"b"
    return tag + struct.pack(">Q", len(data)) + data


def row_digest(row: Sequence[Any]) -> int:
    """The SHA-256 of a canonical row, as a number."""
    h = hashlib.sha256()
    for value in row:
        h.update(_encoded(value))
    return int.from_bytes(h.digest(), "big")


@dataclass
class TableSum:
    """A table's row count and checksum (the sum of its rows' digests modulo 2**256)."""

    rows: int = 0
    total: int = 0

    def add(self, rows: Sequence[Sequence[Any]]) -> None:
        for row in rows:
            self.total = (self.total + row_digest(row)) % MODULUS
        self.rows += len(rows)

    @property
    def checksum(self) -> str:
        return f"{self.total:064x}"

    def as_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "checksum": self.checksum}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TableSum:
        return cls(int(d["rows"]), int(str(d["checksum"]), 16))


# --- reading --------------------------------------------------------------------------------------

def _after(key: Sequence[str]) -> str:
    """The keyset condition "the primary key is after (?, ?, …)": ``a > ? OR (a = ? AND b > ?) …``."""
    parts = []
    for i, column in enumerate(key):
        equal = [f"{c} = ?" for c in key[:i]]
        parts.append("(" + " AND ".join([*equal, f"{column} > ?"]) + ")")
    return " OR ".join(parts)


def _after_args(last: Sequence[Any]) -> list[Any]:
    args: list[Any] = []
    for i in range(len(last)):
        args += [*last[:i], last[i]]
    return args


def pages_txn(txn: Txn, table: Table, page: int = PAGE) -> Iterator[list[tuple]]:
    """Every row of ``table`` as canonical tuples (``table.names`` order), ``page`` rows at a time,
    by primary key (a table without one: by all its columns, with OFFSET; fine inside a snapshot)."""
    columns = ", ".join(table.names)
    key = table.primary_key
    positions = [table.names.index(c) for c in key]
    if not key:
        order = ", ".join(table.names)
        offset = 0
        while True:
            rows = txn.execute(f"SELECT {columns} FROM {table.name} ORDER BY {order} LIMIT ? OFFSET ?",
                               (page, offset)).fetchall()
            if not rows:
                return
            yield [canonical_row(table.kinds, r) for r in rows]
            offset += len(rows)
    last: list[Any] | None = None
    order = ", ".join(key)
    while True:
        if last is None:
            rows = txn.execute(f"SELECT {columns} FROM {table.name} ORDER BY {order} LIMIT ?", (page,)).fetchall()
        else:
            rows = txn.execute(f"SELECT {columns} FROM {table.name} WHERE {_after(key)} ORDER BY {order} LIMIT ?",
                               (*_after_args(last), page)).fetchall()
        if not rows:
            return
        out = [canonical_row(table.kinds, r) for r in rows]
        yield out
        if len(rows) < page:
            return
        last = [rows[-1][p] for p in positions]


def count_txn(txn: Txn, table: Table) -> int:
    return int(txn.scalar(f"SELECT COUNT(*) FROM {table.name}") or 0)


def sequences_txn(txn: Txn, tables: Sequence[Table]) -> dict[str, int]:
    """The next id of each table with an id sequence (SQLite ``AUTOINCREMENT``: its last id + 1;
    InnoDB ``AUTO_INCREMENT``), so that the target never hands out an id the source already used."""
    wanted = {t.name for t in tables}
    if txn.engine_name == "sqlite":
        if not txn.scalar("SELECT COUNT(*) FROM sqlite_master WHERE name = 'sqlite_sequence'"):
            return {}
        rows = txn.execute("SELECT name, seq FROM sqlite_sequence").fetchall()
        return {str(n): int(s) + 1 for n, s in rows if n in wanted and s is not None}
    try:  # MySQL 8 caches these figures for a day unless told otherwise (MariaDB has no such cache)
        txn.execute("SET SESSION information_schema_stats_expiry = 0")
    except Exception:  # noqa: BLE001 - MariaDB: unknown variable
        pass
    rows = txn.execute("SELECT table_name, auto_increment FROM information_schema.tables "
                       "WHERE table_schema = DATABASE() AND auto_increment IS NOT NULL").fetchall()
    return {str(n): int(a) for n, a in rows if n in wanted}


def set_sequences_txn(txn: Txn, sequences: dict[str, int]) -> None:
    """Make each table's next id at least the one given (never lower than its rows need)."""
    for name, next_id in sorted(sequences.items()):
        if txn.engine_name == "sqlite":
            if txn.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = ? AND seq < ?",
                           (next_id - 1, name, next_id - 1)).rowcount == 0 and \
                    txn.scalar("SELECT COUNT(*) FROM sqlite_sequence WHERE name = ?", (name,)) == 0:
                txn.execute("INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)", (name, next_id - 1))
        else:
            txn.execute(f"ALTER TABLE {name} AUTO_INCREMENT = {int(next_id)}")


def insert_txn(txn: Txn, table: Table, rows: Sequence[Sequence[Any]]) -> None:
    """Insert canonical rows (``table.names`` order)."""
    marks = ", ".join("?" * len(table.names))
    txn.executemany(f"INSERT INTO {table.name} ({', '.join(table.names)}) VALUES ({marks})", rows)


# --- the source: one snapshot -----------------------------------------------------------------------

def _cursor_txn(engine: Engine, conn: Any) -> Txn:
    return Txn(conn.cursor(), engine)


@dataclass
class Snapshot:
    """A database read as of one moment (one read transaction on its own connection)."""

    engine: Engine
    conn: Any
    txn: Txn
    version: int
    tables: list[Table]
    sequences: dict[str, int]
    #: the jobs lease as the snapshot saw it (who ran the periodic jobs)
    lease: LeaseState | None
    counts: dict[str, int] = field(default_factory=dict)

    def pages(self, table: Table, page: int = PAGE) -> Iterator[list[tuple]]:
        return pages_txn(self.txn, table, page)

    def stored_chunks(self, page: int = 1000) -> Iterator[str]:
        """The file hashes of the stored files the snapshot holds (their bytes are chunk files)."""
        after = 0
        while True:
            rows = stored_chunks_txn(self.txn, after, page)
            yield from (file_hash for _, file_hash in rows)
            if len(rows) < page:
                return
            after = rows[-1][0]

    def close(self) -> None:
        try:
            self.conn.rollback()
        finally:
            self.conn.close()


def open_snapshot(url: str) -> Snapshot:
    """Begin a read transaction on ``url`` and read what the move needs up front: the schema version,
    the catalogue, each table's row count, the id sequences and the jobs lease."""
    engine = create_engine(url)
    if engine.name == "sqlite" and not os.path.exists(engine.url.path):
        raise TransferError(f"no database at {os.path.abspath(engine.url.path)}")
    conn = engine.connect()
    try:
        if engine.name == "sqlite":
            conn.isolation_level = None  # our own BEGIN: a read transaction that is one snapshot
            conn.execute("BEGIN")
        else:
            with conn.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                cursor.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
        txn = _cursor_txn(engine, conn)
        version = schema.current_version_txn(txn)
        if version == 0:
            raise TransferError(f"{engine.describe()} holds no downstream-tx node")
        tables = catalogue_txn(txn)
        snapshot = Snapshot(engine, conn, txn, version, tables, sequences_txn(txn, tables),
                            state_txn(txn, JOBS) if any(t.name == "leases" for t in tables) else None)
        snapshot.counts = {t.name: count_txn(txn, t) for t in tables}
        return snapshot
    except BaseException:
        conn.close()
        raise


# --- the target: an empty database --------------------------------------------------------------------

def _is_empty_sqlite(path: str) -> bool:
    if not os.path.exists(path):
        return True
    if os.path.getsize(path) == 0:
        return True
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0] == 0
    finally:
        conn.close()


def describe_url(url: str) -> str:
    """``url`` for people: a SQLite file by its absolute path, a password masked."""
    engine = create_engine(url)
    if engine.name == "sqlite":
        return f"sqlite:///{os.path.abspath(engine.url.path)}"
    return engine.describe()


class Target:
    """An empty database being filled: :meth:`prepare`, :meth:`insert` per page, :meth:`finish`
    (or :meth:`abort` on any failure: the target is left as empty as it was)."""

    def __init__(self, url: str):
        self.url = url
        self.engine = create_engine(url)
        self.conn: Any = None
        self.txn: Txn | None = None
        self.tables: dict[str, Table] = {}
        self._work_path: str | None = None
        self._created = False

    @property
    def description(self) -> str:
        return describe_url(self.url)

    def check_empty(self) -> None:
        """Refuse a target that has any table (nothing is overwritten, ever)."""
        if self.engine.name == "sqlite":
            path = os.path.abspath(self.engine.url.path)
            if not _is_empty_sqlite(path):
                raise TransferError(f"the target {path} is not empty: it has tables already (move it away, or "
                                    "name a new file)")
            return
        conn = self.engine.connect()
        try:
            names = table_names_txn(_cursor_txn(self.engine, conn))
        finally:
            conn.close()
        if names:
            db = self.engine.url.database
            raise TransferError(f"the target {self.engine.describe()} is not empty: it has {len(names)} tables "
                                f"(a node started on it?); if it holds nothing you need, re-create it empty: DROP "
                                f"DATABASE {db}; CREATE DATABASE {db} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")

    def prepare(self, version: int, tables: Sequence[Table], steps: list[schema.Step] | None = None) -> None:
        """Check that the target is empty, make the schema of ``version`` with this code's schema
        steps, clear the rows the steps seed, and check that the target's tables are ``tables``
        (same names, columns and kinds)."""
        self.check_empty()
        steps = schema.load_steps(self.engine.name) if steps is None else steps
        if version > steps[-1].version:
            raise TransferError(f"schema version {version} is newer than this downstream-tx knows "
                                f"({steps[-1].version}): install the newer downstream-tx")
        if self.engine.name == "sqlite":
            path = os.path.abspath(self.engine.url.path)
            make_private_dirs(os.path.dirname(path))
            self._work_path = f"{path}.partial-{os.getpid()}"
            for suffix in ("", "-journal", "-wal", "-shm"):
                _remove(self._work_path + suffix)
            create_private_file(self._work_path)
            self.engine = create_engine("sqlite:///" + self._work_path)
        self._created = True
        self.conn = self.engine.connect()
        if self.engine.name == "sqlite":
            self.conn.execute("PRAGMA journal_mode=DELETE")  # one file to rename at the end
            self.conn.execute("PRAGMA synchronous=OFF")  # a failed build is thrown away anyway
        self.txn = _cursor_txn(self.engine, self.conn)
        schema.upgrade_txn(self.txn, [s for s in steps if s.version <= version])
        mine = catalogue_txn(self.txn)
        for table in reversed(mine):
            self.txn.execute(f"DELETE FROM {table.name}")
        self.conn.commit()
        self.tables = {t.name: t for t in mine}
        theirs = {t.name: t for t in tables}
        if set(theirs) != set(self.tables):
            extra = sorted(set(theirs) - set(self.tables))
            missing = sorted(set(self.tables) - set(theirs))
            raise TransferError(f"the tables differ from schema version {version}'s"
                                + (f": {', '.join(extra)} unknown here" if extra else "")
                                + (f": {', '.join(missing)} missing" if missing else ""))
        for name, table in theirs.items():
            if table.columns != self.tables[name].columns:
                raise TransferError(f"table {name}: its columns differ from schema version {version}'s "
                                    f"({table.columns} against {self.tables[name].columns})")

    def insert(self, table: Table, rows: Sequence[Sequence[Any]]) -> None:
        """Insert a page of canonical rows (``table.names`` order) and commit them."""
        assert self.txn is not None
        insert_txn(self.txn, table, rows)
        self.conn.commit()

    def set_sequences(self, sequences: dict[str, int]) -> None:
        assert self.txn is not None
        set_sequences_txn(self.txn, {n: s for n, s in sequences.items() if n in self.tables})
        self.conn.commit()

    def sums(self, progress: Callable[[int], None] | None = None) -> dict[str, TableSum]:
        """Every table's count and checksum as the target stores it (read back, page by page)."""
        assert self.txn is not None
        sums: dict[str, TableSum] = {}
        for table in self.tables.values():
            total = sums[table.name] = TableSum()
            for page in pages_txn(self.txn, table):
                total.add(page)
                if progress is not None:
                    progress(len(page))
        self.conn.commit()
        return sums

    def upgrade(self, steps: list[schema.Step] | None = None) -> tuple[int, int]:
        """Apply the schema steps after the target's version (an older node restored: as the daemon
        would on start)."""
        assert self.txn is not None
        steps = schema.load_steps(self.engine.name) if steps is None else steps
        result = schema.upgrade_txn(self.txn, steps)
        self.conn.commit()
        return result

    def finish(self) -> None:
        """Close the target; a SQLite target's file takes its name now."""
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.commit()
            conn.close()
        if self._work_path is not None:
            final = self._work_path.rsplit(".partial-", 1)[0]
            with open(self._work_path, "rb") as f:
                os.fsync(f.fileno())
            if not _is_empty_sqlite(final):  # made meanwhile by someone else: never overwritten
                raise TransferError(f"{final} appeared while the copy ran; the copy is left at {self._work_path}")
            os.replace(self._work_path, final)
            self._work_path = None

    def abort(self) -> None:
        """Leave the target as empty as it was: remove the SQLite file being built, or drop the tables
        made in the (empty) MySQL database."""
        conn, self.conn = self.conn, None
        if conn is not None:
            try:
                conn.rollback()
            except Exception:  # noqa: BLE001 - the connection may be what failed
                pass
            conn.close()
        if self._work_path is not None:
            for suffix in ("", "-journal", "-wal", "-shm"):
                _remove(self._work_path + suffix)
            self._work_path = None
        elif self._created and self.engine.name == "mysql":
            conn = self.engine.connect()
            try:
                txn = _cursor_txn(self.engine, conn)
                txn.execute("SET FOREIGN_KEY_CHECKS = 0")
                for name in table_names_txn(txn):
                    txn.execute(f"DROP TABLE IF EXISTS {name}")
                conn.commit()
            finally:
                conn.close()


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
