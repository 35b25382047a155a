"""Versioned schema: create a new database, upgrade an older one, refuse a newer one.

Schema steps are files in ``schema/`` named ``NNN_name.sql`` (one dialect) or
``NNN_name.<engine>.sql`` (where the engines must differ). Step N brings a database from version
N-1 to N. The version lives in the one-row table ``schema_version``. A step may be followed by code
(:data:`FILLS`) that fills what it made from the rows already there, in the same transaction.
"""

from __future__ import annotations

import os
import re
import sqlite3
from dataclasses import dataclass
from importlib import resources

from downstream_tx.db import counters
from downstream_tx.db.database import Txn
from downstream_tx.private import create_private_file

#: steps whose SQL is followed by code: filling what the step made from the existing rows
FILLS = {12: counters.fill_txn}

_STEP = re.compile(r"^(\d{3})_[a-z0-9_]+(?:\.(sqlite|mysql))?\.sql$")


class SchemaError(Exception):
    """The database's schema cannot be used by this version of the code."""


@dataclass(frozen=True)
class Step:
    version: int
    name: str
    sql: str


def load_steps(engine_name: str, directory: str | None = None) -> list[Step]:
    if directory is None:
        files = {p.name: p.read_text() for p in resources.files("downstream_tx.db").joinpath("schema").iterdir()
                 if p.name.endswith(".sql")}
    else:
        files = {}
        for name in os.listdir(directory):
            if name.endswith(".sql"):
                with open(os.path.join(directory, name)) as f:
                    files[name] = f.read()
    steps: dict[int, Step] = {}
    for name, text in sorted(files.items()):
        m = _STEP.match(name)
        if not m or (m.group(2) and m.group(2) != engine_name):
            continue
        version = int(m.group(1))
        if version in steps:
            raise SchemaError(f"two schema files for version {version}: {steps[version].name}, {name}")
        steps[version] = Step(version, name, text)
    ordered = [steps[v] for v in sorted(steps)]
    if [s.version for s in ordered] != list(range(1, len(ordered) + 1)):
        raise SchemaError("schema steps must be numbered 001, 002, … without gaps")
    return ordered


def current_version_txn(txn: Txn) -> int:
    """0 for an empty database."""
    if txn.engine_name == "sqlite":
        exists = txn.scalar("SELECT COUNT(*) FROM sqlite_master WHERE type='table' AND name='schema_version'")
    else:
        exists = txn.scalar(
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE() "
            "AND table_name = 'schema_version'"
        )
    if not exists:
        return 0
    return int(txn.scalar("SELECT version FROM schema_version") or 0)


def check_version(found: int, latest: int) -> None:
    if found > latest:
        raise SchemaError(
            f"the database has schema version {found}, newer than this downstream-tx knows "
            f"(version {latest}); upgrade downstream-tx or use a matching database"
        )


def upgrade_txn(txn: Txn, steps: list[Step]) -> tuple[int, int]:
    """Apply every missing step. Returns (version before, version after)."""
    before = current_version_txn(txn)
    latest = steps[-1].version if steps else 0
    check_version(before, latest)
    if before == 0:
        txn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL PRIMARY KEY)")
        txn.execute("INSERT INTO schema_version (version) VALUES (0)")
    for step in steps:
        if step.version <= before:
            continue
        txn.script(step.sql)
        fill = FILLS.get(step.version)
        if fill is not None:
            fill(txn)
        txn.execute("UPDATE schema_version SET version = ?", (step.version,))
    return before, latest


def backup_sqlite(path: str, version: int) -> str | None:
    """Copy an existing SQLite database (consistently, through the backup API) before an upgrade."""
    if not os.path.exists(path):
        return None
    target = f"{path}.v{version}.bak"
    create_private_file(target)  # 0600 from the start: it holds the node secret and the chunks' keys
    src = sqlite3.connect(path)
    try:
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)
        finally:
            dst.close()
    finally:
        src.close()
    return target


def sqlite_version_of(path: str) -> int:
    """Schema version of a SQLite file without the pool (0 if missing or empty)."""
    if not os.path.exists(path):
        return 0
    conn = sqlite3.connect(path)
    try:
        row = conn.execute("SELECT name FROM sqlite_master WHERE type='table' AND name='schema_version'").fetchone()
        if row is None:
            return 0
        value = conn.execute("SELECT version FROM schema_version").fetchone()
        return int(value[0]) if value else 0
    finally:
        conn.close()


def node_databases(directory: str, exclude: str | None = None) -> list[tuple[str, int]]:
    """``(path, schema version)`` of the SQLite node databases (``*.db`` files with a schema) in
    ``directory``, other than ``exclude``: what a daemon that starts a new node should mention."""
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return []
    skip = os.path.abspath(exclude) if exclude else None
    found = []
    for name in names:
        path = os.path.abspath(os.path.join(directory, name))
        if not name.endswith(".db") or path == skip or not os.path.isfile(path):
            continue
        try:
            version = sqlite_version_of(path)
        except sqlite3.Error:  # not a SQLite file, or unreadable: not a node database we can name
            continue
        if version > 0:
            found.append((path, version))
    return found
