"""The test databases handed out again (tests/support/databases.py) are exactly what a fresh schema
upgrade makes: the same tables, rows and AUTO_INCREMENTs, whatever the test before them did to
the database (wrote rows, changed the upgrade's own rows, altered a table, dropped it, built an
older schema), on both engines."""

from __future__ import annotations

import os
import stat

import pytest

from downstream_tx.db import schema
from downstream_tx.db.engine import create_engine
from support import (
    ADDRESS,
    MYSQL_SKIP_REASON,
    MYSQL_URL,
    StubClient,
    add_test_file,
    fresh_mysql_database,
    make_config,
    make_node,
    make_resource,
    new_token,
    open_database,
    run,
    upgraded_mysql_database,
)
from support.databases import COUNTS, FRESH_ENV, TEMPLATES


def everything(url: str) -> dict:
    """Each table's definition (with its AUTO_INCREMENT) and rows, sorted."""
    conn = create_engine(url).connect()
    try:
        cur = conn.cursor()
        if url.startswith("sqlite"):
            cur.execute("SELECT type, name, sql FROM sqlite_master ORDER BY type, name")
            definitions = cur.fetchall()
            tables = [name for kind, name, _ in definitions if kind == "table"]
        else:
            cur.execute("SHOW FULL TABLES")
            tables = sorted(name for name, _ in cur.fetchall())
            definitions = []
            for table in tables:
                cur.execute(f"SHOW CREATE TABLE `{table}`")
                definitions.append(cur.fetchone())
        rows = {}
        for table in tables:
            cur.execute(f"SELECT * FROM {table}")
            rows[table] = sorted(map(repr, cur.fetchall()))
        return {"definitions": definitions, "rows": rows}
    finally:
        conn.close()


def a_test_that_writes(url: str, tmp_path) -> None:
    config = make_config(tmp_path, url)
    node = make_node(config)
    try:
        add_test_file(node, tmp_path, redundancy=2)
        client = StubClient(make_resource(node, config))
        token = new_token(client, ADDRESS)
        assert client.get(f"/api/downstream/chunk/{token}").code == 200
        run(node.db.run("seeded", lambda txn: txn.execute(
            "UPDATE vetting SET total = 5 WHERE protocol = 0")))
    finally:
        node.db.close()


def built_from_nothing(url: str) -> dict:
    fresh_mysql_database(url)
    open_database(url).close()
    return everything(url)


def alter(url: str, statement: str) -> None:
    db = open_database(url, upgrade=False)
    try:
        run(db.run("alter", lambda txn: txn.execute(statement)))
    finally:
        db.close()


def older_schema(url: str) -> None:
    fresh_mysql_database(url)
    db = open_database(url, upgrade=False)
    try:
        run(db.run("old", schema.upgrade_txn, schema.load_steps("mysql")[:7]))
    finally:
        db.close()


@pytest.fixture(autouse=True)
def reuse_on(monkeypatch):
    """These tests are of the reuse itself: on even in a run with DOWNSTREAM_TEST_FRESH_DB=1."""
    monkeypatch.delenv(FRESH_ENV, raising=False)


@pytest.fixture
def mysql_url():
    if not MYSQL_URL:
        pytest.skip(MYSQL_SKIP_REASON)
    return MYSQL_URL


@pytest.mark.mysql
@pytest.mark.parametrize("before", [
    "rows", "dropped", "older schema", "a column added", "an index dropped", "a table of its own",
    "the upgrade's rows changed", "a newer version"])
def test_the_mysql_database_handed_out_again_is_a_fresh_upgrade(mysql_url, tmp_path, before):
    fresh = built_from_nothing(mysql_url)
    upgraded_mysql_database(mysql_url)
    assert everything(mysql_url) == fresh
    a_test_that_writes(mysql_url, tmp_path)  # rows and AUTO_INCREMENTs moved in most tables
    assert everything(mysql_url) != fresh
    if before == "dropped":
        fresh_mysql_database(mysql_url)
    elif before == "older schema":
        older_schema(mysql_url)
    elif before == "a column added":
        alter(mysql_url, "ALTER TABLE files ADD COLUMN extra INTEGER")
    elif before == "an index dropped":
        alter(mysql_url, "DROP INDEX files_urgent ON files")
    elif before == "a table of its own":
        alter(mysql_url, "CREATE TABLE scratch (x INTEGER)")
    elif before == "the upgrade's rows changed":
        alter(mysql_url, "DELETE FROM leases")
    elif before == "a newer version":
        alter(mysql_url, "UPDATE schema_version SET version = 99")
    counts = COUNTS.copy()
    upgraded_mysql_database(mysql_url)
    assert everything(mysql_url) == fresh
    # emptied and refilled where only rows changed, built again where the structure did
    rebuilt = before not in ("rows", "the upgrade's rows changed", "a newer version")
    assert COUNTS - counts == {"built" if rebuilt else "restored": 1}
    upgraded_mysql_database(mysql_url)  # after a test that changed nothing
    assert everything(mysql_url) == fresh
    assert COUNTS - counts == ({"built": 1, "restored": 1} if rebuilt else {"restored": 2})


@pytest.mark.mysql
def test_a_mysql_database_dropped_by_another_connection_is_built_again(mysql_url, tmp_path):
    fresh = built_from_nothing(mysql_url)
    upgraded_mysql_database(mysql_url)
    a_test_that_writes(mysql_url, tmp_path)
    conn = create_engine(mysql_url).connect()
    try:
        conn.cursor().execute("DROP DATABASE " + mysql_url.rsplit("/", 1)[1])
    finally:
        conn.close()
    upgraded_mysql_database(mysql_url)
    assert everything(mysql_url) == fresh


@pytest.mark.mysql
def test_with_reuse_off_the_mysql_database_is_built_from_nothing(mysql_url, monkeypatch):
    fresh = built_from_nothing(mysql_url)
    calls = []
    monkeypatch.setenv(FRESH_ENV, "1")
    monkeypatch.setattr("support.databases.fresh_mysql_database",
                        lambda url: calls.append(url) or fresh_mysql_database(url))
    upgraded_mysql_database(mysql_url)
    assert calls == [mysql_url] and everything(mysql_url) == fresh


def test_a_new_sqlite_database_is_a_private_copy_of_the_upgraded_template(tmp_path):
    assert TEMPLATES.directory is not None  # (the session's: conftest.py)
    built = "sqlite:///" + str(tmp_path / "a" / "node.db")
    open_database(built, template=False).close()
    old = os.umask(0)
    try:
        copied = "sqlite:///" + str(tmp_path / "b" / "node.db")
        open_database(copied).close()
    finally:
        os.umask(old)
    assert everything(copied) == everything(built)
    assert stat.S_IMODE(os.stat(tmp_path / "b" / "node.db").st_mode) == 0o600
    assert TEMPLATES.built is not None and os.path.exists(TEMPLATES.built[0])


def test_an_existing_sqlite_file_is_never_replaced_by_the_template(tmp_path):
    url = "sqlite:///" + str(tmp_path / "node.db")
    db = open_database(url, upgrade=False)
    run(db.run("v1", schema.upgrade_txn, schema.load_steps("sqlite")[:1]))
    db.close()
    assert run((db := open_database(url)).run("v", schema.current_version_txn)) == len(schema.load_steps("sqlite"))
    db.close()
    assert schema.sqlite_version_of(str(tmp_path / "node.db")) == len(schema.load_steps("sqlite"))


def test_a_replaced_upgrade_makes_the_new_sqlite_databases(tmp_path, monkeypatch):
    """A test that replaces the upgrade gets what it makes, not a copy of what the real one made."""
    plain = schema.upgrade_txn

    def upgrade_txn(txn, steps):
        before, after = plain(txn, steps)
        if before < after:
            txn.execute("CREATE TABLE marker (x INTEGER)")
        return before, after

    open_database("sqlite:///" + str(tmp_path / "first" / "node.db")).close()  # the template exists
    monkeypatch.setattr(schema, "upgrade_txn", upgrade_txn)
    second = "sqlite:///" + str(tmp_path / "second" / "node.db")
    open_database(second).close()
    assert ("table", "marker", "CREATE TABLE marker (x INTEGER)") in everything(second)["definitions"]
    monkeypatch.setattr(schema, "upgrade_txn", plain)
    third = "sqlite:///" + str(tmp_path / "third" / "node.db")
    open_database(third).close()
    assert "marker" not in everything(third)["rows"]
