"""Each test's database as a fresh schema upgrade leaves it, made cheaply (docs/testing.md, "Test
databases").

Running the schema steps (``schema.upgrade_txn``) on a new database is the dearest part of most
tests' set-up: on MariaDB a DROP and CREATE DATABASE and about 20 tables made and altered, each a
file and an fsync (0.3 s a test or more), on SQLite about 10 ms. So each engine's schema is built once per
test session and handed out again:

- MySQL/MariaDB (:func:`upgraded_mysql_database`, the ``db_url`` fixture): the first call for a
  database builds it (dropped, created, every step) and records what the upgrade left: each table's
  ``SHOW CREATE TABLE`` (its AUTO_INCREMENT apart), the table list, triggers, routines, events and
  the database's character set (the *structure*), each table's ``CHECKSUM TABLE``, its rows when it
  has any (``schema_version``, ``vetting``, ``leases``, …) and its AUTO_INCREMENT. Every later call
  compares the structure first: a database that is missing, that a test dropped or re-created
  (:func:`fresh_mysql_database`), built at an older version, altered, or given a table of its own is
  built again from nothing. Otherwise each table whose checksum differs is emptied and given back
  its recorded rows (one transaction), each AUTO_INCREMENT that moved is set back, and those tables
  are checked again (a mismatch: built again). A test sees no other test's rows, counters or ids.
- SQLite (:func:`copy_sqlite_template`, from ``open_test_db``): the steps run once into a template
  file of the session; a test whose database file does not exist yet gets a copy of it (mode 0600,
  as the node creates its file) instead of running them.

Both are used only while the schema code is the one they were built with (``schema.upgrade_txn``
and the fills of ``schema.FILLS``, which a test may replace); ``DOWNSTREAM_TEST_FRESH_DB=1`` turns
both off (every test's database is then dropped and built from nothing, as before), and so does
``DOWNSTREAM_TEST_SPIDER`` for MySQL (the Spider hook shards the tables each upgrade creates).
"""

from __future__ import annotations

import os
import re
import shutil
from collections import Counter
from dataclasses import dataclass
from typing import Any

from downstream_tx.db import schema
from downstream_tx.db.url import parse_db_url
from downstream_tx.private import FILE_MODE

#: set to 1: no reuse, every test's database is built from nothing (for a suspected leak between tests)
FRESH_ENV = "DOWNSTREAM_TEST_FRESH_DB"
_AUTO_INCREMENT = re.compile(r" AUTO_INCREMENT=(\d+)")


def reuse_enabled() -> bool:
    return os.environ.get(FRESH_ENV, "") in ("", "0")


def schema_code() -> tuple:
    """What the built schemas depend on besides the step files: the upgrade and its fills (the
    objects themselves: a test that replaces one gets a database built by its own)."""
    return (schema.upgrade_txn, tuple(sorted(schema.FILLS.items(), key=lambda item: item[0])))


# --- MySQL/MariaDB ---------------------------------------------------------------------------------

def _database_key(url: str) -> tuple[str, int, str]:
    parsed = parse_db_url(url)
    return (parsed.host, parsed.port, parsed.database)


def _server_connection(url: str, database: bool = True, **kwargs: Any):
    import pymysql

    parsed = parse_db_url(url)
    return pymysql.connect(host=parsed.host, port=parsed.port, user=parsed.user, password=parsed.password,
                           database=parsed.database if database else None, **kwargs)


def fresh_mysql_database(url: str) -> None:
    """Drop and re-create the database named in ``url`` (the test user may do so): empty, no
    schema. The next :func:`upgraded_mysql_database` builds it again."""
    _forget(url)
    parsed = parse_db_url(url)
    conn = _server_connection(url, database=False)
    try:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{parsed.database}`")
            cur.execute(f"CREATE DATABASE `{parsed.database}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
        conn.commit()
    finally:
        conn.close()


@dataclass
class _Built:
    """A database as the upgrade left it (see the module's docstring)."""

    url: str
    code: tuple
    structure: tuple
    checksums: dict[str, int | None]
    rows: dict[str, tuple[tuple[str, ...], list[tuple]]]
    auto_increment: dict[str, int | None]
    conn: Any


_BUILT: dict[tuple[str, int, str], _Built] = {}
#: how each MySQL database was handed out this session: ``built`` (from nothing) or ``restored``
COUNTS: Counter[str] = Counter()


def _forget(url: str) -> None:
    built = _BUILT.pop(_database_key(url), None)
    if built is not None:
        try:
            built.conn.close()
        except Exception:  # already lost: nothing to close
            pass


def _structure(cur) -> tuple[tuple, dict[str, int | None]]:
    """The database's structure and each table's AUTO_INCREMENT (``None``: no counter)."""
    cur.execute("SELECT @@character_set_database, @@collation_database")
    charset = tuple(cur.fetchone())
    cur.execute("SHOW FULL TABLES")
    tables = tuple(sorted((str(name), str(kind)) for name, kind in cur.fetchall()))
    creates = []
    counters: dict[str, int | None] = {}
    for name, kind in tables:
        if kind != "BASE TABLE":  # a view: named in the list, which the upgrade never makes
            continue
        create, counters[name] = _create_table(cur, name)
        creates.append(create)
    cur.execute("SELECT 'trigger', trigger_name, event_object_table, action_timing, event_manipulation, "
                "action_statement FROM information_schema.triggers WHERE trigger_schema = DATABASE() UNION ALL "
                "SELECT 'routine', routine_type, routine_name, '', '', '' FROM information_schema.routines "
                "WHERE routine_schema = DATABASE() UNION ALL "
                "SELECT 'event', event_name, '', '', '', '' FROM information_schema.events "
                "WHERE event_schema = DATABASE()")
    others = tuple(sorted(tuple(map(str, row)) for row in cur.fetchall()))
    return (charset, tables, tuple(creates), others), counters


def _checksums(cur, tables) -> dict[str, int | None]:
    if not tables:
        return {}
    cur.execute("CHECKSUM TABLE " + ", ".join(f"`{t}`" for t in tables))
    return {str(name).split(".", 1)[1]: (None if value is None else int(value)) for name, value in cur.fetchall()}


def _build(url: str, code: tuple) -> None:
    """Drop, create and upgrade the database, then record what the upgrade left."""
    from support import open_database

    fresh_mysql_database(url)
    open_database(url).close()
    conn = _server_connection(url, autocommit=True)
    try:
        with conn.cursor() as cur:
            # emptying a parent before its children (and refilling): every table is put back
            cur.execute("SET SESSION foreign_key_checks = 0")
            structure, counters = _structure(cur)
            checksums = _checksums(cur, list(counters))
            rows = {}
            for table in counters:
                cur.execute(f"SELECT * FROM `{table}`")
                found = list(cur.fetchall())
                if found:
                    rows[table] = (tuple(d[0] for d in cur.description), found)
    except BaseException:
        conn.close()
        raise
    _BUILT[_database_key(url)] = _Built(url, code, structure, checksums, rows, counters, conn)


def _restore(built: _Built) -> bool:
    """Put a database of the recorded structure back to its recorded contents; False if it is not
    (then it is built again)."""
    import pymysql

    try:
        built.conn.ping(False)
    except pymysql.MySQLError:  # lost (a test that kills connections): a new one
        built.conn = _server_connection(built.url, autocommit=True)
    conn = built.conn
    with conn.cursor() as cur:
        cur.execute("SET SESSION foreign_key_checks = 0")
        structure, counters = _structure(cur)
        if structure != built.structure:
            return False
        changed = [t for t, value in _checksums(cur, list(counters)).items() if value != built.checksums.get(t)]
        if changed:
            cur.execute("START TRANSACTION")
            for table in changed:
                cur.execute(f"DELETE FROM `{table}`")
                if table in built.rows:
                    columns, rows = built.rows[table]
                    names = ", ".join(f"`{c}`" for c in columns)
                    marks = ", ".join(["%s"] * len(columns))
                    cur.executemany(f"INSERT INTO `{table}` ({names}) VALUES ({marks})", rows)
            cur.execute("COMMIT")
        moved = [t for t, value in counters.items() if value != built.auto_increment[t]]
        for table in moved:
            cur.execute(f"ALTER TABLE `{table}` AUTO_INCREMENT = {built.auto_increment[table] or 1}")
        # checked again: what was put back is what was recorded
        again = _checksums(cur, changed)
        return all(again[t] == built.checksums[t] for t in changed) and all(
            _create_table(cur, t)[1] == built.auto_increment[t] for t in moved)


def _create_table(cur, table: str) -> tuple[str, int | None]:
    """The table's ``SHOW CREATE TABLE`` without its AUTO_INCREMENT, and that (``None``: no counter)."""
    cur.execute(f"SHOW CREATE TABLE `{table}`")
    create = str(cur.fetchone()[1])
    found = _AUTO_INCREMENT.search(create)
    return _AUTO_INCREMENT.sub("", create, count=1), int(found.group(1)) if found else None


def upgraded_mysql_database(url: str) -> None:
    """The database named in ``url`` exactly as a fresh schema upgrade leaves it: built once per
    session, then emptied back to that state (see the module's docstring)."""
    from support import open_database

    if not reuse_enabled() or os.environ.get("DOWNSTREAM_TEST_SPIDER"):
        fresh_mysql_database(url)
        open_database(url).close()
        return
    import pymysql

    code = schema_code()
    built = _BUILT.get(_database_key(url))
    if built is not None and built.code == code:
        try:
            if _restore(built):
                COUNTS["restored"] += 1
                return
        except pymysql.MySQLError:  # e.g. the database was dropped: built again below
            pass
    _build(url, code)
    COUNTS["built"] += 1


# --- SQLite ----------------------------------------------------------------------------------------

class _Templates:
    #: where the session's template files go (the ``db_templates`` fixture sets it); None: none made
    directory: str | None = None
    #: the template file and the schema code it was built with
    built: tuple[str, tuple] | None = None


TEMPLATES = _Templates()


def copy_sqlite_template(path: str) -> bool:
    """Create the missing SQLite database file ``path`` as a copy of the session's freshly upgraded
    template (built on first use); False (nothing done) if ``path`` exists or there is no template."""
    if os.path.exists(path) or TEMPLATES.directory is None or not reuse_enabled():
        return False
    code = schema_code()
    if TEMPLATES.built is None or TEMPLATES.built[1] != code:
        TEMPLATES.built = None
        template = os.path.join(TEMPLATES.directory, f"template-{len(os.listdir(TEMPLATES.directory))}.db")
        from support import open_database

        open_database("sqlite:///" + template, template=False).close()
        if any(os.path.exists(template + side) for side in ("-wal", "-shm", "-journal")):
            return False  # not one closed file: no template
        TEMPLATES.built = (template, code)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    with os.fdopen(fd, "wb") as out, open(TEMPLATES.built[0], "rb") as src:
        shutil.copyfileobj(src, out)
    return True
