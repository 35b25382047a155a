"""The node's state moved between databases (``db/transfer.py``, ``lifecycle/copy.py``): the tables
from the catalogue in foreign-key order, canonical values whose checksums mean the same on both
engines, one consistent snapshot of a live source, pages, id sequences, an empty target that a failed
copy leaves empty; SQLite → MySQL/MariaDB and back."""

from __future__ import annotations

import os
import shutil
import sqlite3

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from downstream_tx.db import schema
from downstream_tx.db.database import Txn
from downstream_tx.db.engine import create_engine
from downstream_tx.db.transfer import (
    BLOB,
    CHAR,
    INTEGER,
    REAL,
    TEXT,
    Table,
    TableSum,
    Target,
    TransferError,
    canonical,
    catalogue_txn,
    in_reference_order,
    kind_of,
    open_snapshot,
    pages_txn,
    row_digest,
)
from downstream_tx.lifecycle.copy import copy_database
from support import MYSQL_URL, fresh_mysql_database, make_address
from support.lifecycle import canonical_tables, catalogue_of, other_mysql_url, populate, sqlite_url


@pytest.fixture
def node(seeded_nodes):
    """A node with its seeded pool filled (so that populate() gives every table rows)."""
    return seeded_nodes()


# --- pure parts ------------------------------------------------------------------------------------

@pytest.mark.parametrize("declared, kind", [
    ("INTEGER", INTEGER), ("BIGINT", INTEGER), ("bigint(20)", INTEGER), ("int(11)", INTEGER),
    ("DOUBLE", REAL), ("double", REAL), ("TEXT", TEXT), ("mediumtext", TEXT), ("VARCHAR(64)", TEXT),
    ("varchar(64)", TEXT), ("CHAR(20)", CHAR), ("char(64)", CHAR), ("BLOB", BLOB), ("VARBINARY(32)", BLOB),
    ("varbinary(1024)", BLOB), ("", BLOB), ("CLOB", TEXT), ("NCHAR(8)", CHAR), ("FLOAT", REAL)])
def test_column_kinds_of_both_engines(declared, kind):
    assert kind_of(declared) == kind


def test_canonical_values_read_the_same_from_either_engine():
    assert canonical(REAL, 5) == 5.0 and isinstance(canonical(REAL, 5), float)
    assert str(canonical(REAL, -0.0)) == "0.0"  # MySQL stores no negative zero
    assert canonical(INTEGER, 7.0) == 7 and canonical(INTEGER, b"7") == 7
    assert canonical(CHAR, "ab  ") == "ab" and canonical(TEXT, "ab  ") == "ab  "  # MySQL strips CHAR's spaces
    assert canonical(BLOB, memoryview(b"\x00\x01")) == b"\x00\x01" and canonical(BLOB, "é") == "é".encode()
    assert canonical(TEXT, b"caf\xc3\xa9") == "café" and canonical(INTEGER, None) is None
    with pytest.raises(TransferError):
        canonical(INTEGER, 1.5)


values = st.one_of(st.none(), st.integers(-(1 << 63), (1 << 63) - 1), st.floats(allow_nan=False),
                   st.text(max_size=20), st.binary(max_size=20))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(values, min_size=3, max_size=3), max_size=30, unique_by=repr), st.randoms())
def test_a_checksum_depends_on_the_rows_not_their_order(rows, rnd):
    forward, shuffled = TableSum(), TableSum()
    forward.add(rows)
    mixed = list(rows)
    rnd.shuffle(mixed)
    for row in mixed:  # and not on how they are paged
        shuffled.add([row])
    assert forward == shuffled and forward.rows == len(rows)


@settings(max_examples=300, deadline=None)
@given(values, values)
def test_different_values_different_digests(a, b):
    """1, 1.0, "1" and b"1" are four different values; a value's digest is its type and content."""
    if type(a) is type(b) and a == b and repr(a) == repr(b):
        assert row_digest([a]) == row_digest([b])
    else:
        assert row_digest([a]) != row_digest([b])


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([INTEGER, REAL, TEXT, CHAR, BLOB]), values)
def test_canonical_is_idempotent(kind, value):
    try:
        once = canonical(kind, value)
    except (TransferError, ValueError, UnicodeDecodeError):
        return  # a value the kind cannot hold (never read from a column of that kind)
    assert canonical(kind, once) == once and type(canonical(kind, once)) is type(once)


def test_reference_order_puts_every_table_after_what_it_references():
    tables = [Table("c", (("id", INTEGER),), ("id",), ("a", "b")), Table("b", (("id", INTEGER),), ("id",), ("a",)),
              Table("a", (("id", INTEGER),), ("id",)), Table("d", (("id", INTEGER),), ("id",), ("gone",))]
    assert [t.name for t in in_reference_order(tables)] == ["a", "d", "b", "c"]
    with pytest.raises(TransferError, match="cycle"):
        in_reference_order([Table("x", (), (), ("y",)), Table("y", (), (), ("x",))])


# --- the catalogue ---------------------------------------------------------------------------------

def test_the_catalogue_is_every_node_table_in_reference_order(node):
    tables = catalogue_of(node.config.db_url)
    names = [t.name for t in tables]
    assert "schema_version" not in names and len(names) == len(set(names))
    for must in ("tokens", "files", "contracts", "challenges", "node_meta", "reputation", "leases"):
        assert must in names
    for i, table in enumerate(tables):
        assert all(names.index(r) < i for r in table.references), table
        assert table.primary_key, f"{table.name} has no primary key"
    contracts = {t.name: t for t in tables}["contracts"]
    assert set(contracts.references) == {"tokens", "files"}  # from the catalogue, not a list here


@pytest.mark.mysql
def test_both_engines_describe_the_schema_alike(tmp_path):
    """Same tables, columns, kinds, keys and order on SQLite and MySQL: a checksum means the same."""
    fresh_mysql_database(MYSQL_URL)
    for url in (sqlite_url(tmp_path / "a.db"), MYSQL_URL):
        engine = create_engine(url)
        conn = engine.connect()
        schema.upgrade_txn(Txn(conn.cursor(), engine), schema.load_steps(engine.name))
        conn.commit()
        conn.close()
    assert catalogue_of(sqlite_url(tmp_path / "a.db")) == catalogue_of(MYSQL_URL)


# --- copying ----------------------------------------------------------------------------------------

def copy_targets(tmp_path, source_engine: str) -> list[str]:
    """SQLite to SQLite; with MySQL: MySQL to SQLite and MySQL to MySQL."""
    targets = [sqlite_url(tmp_path / "target" / "copy.db")]
    if source_engine == "mysql":
        targets.append(other_mysql_url("copy"))
    return targets


def test_copy_moves_every_row_and_checks_it(node, tmp_path, clock):
    populate(node, tmp_path, clock)
    source = canonical_tables(node.config.db_url)
    assert [t for t in ("tokens", "files", "contracts", "contract_tags", "challenges", "seeded_pool", "reputation",
                        "history", "addresses", "rate_buckets", "node_meta") if not source[t]] == []
    for target in copy_targets(tmp_path, node.db.engine.name):
        moved = copy_database(node.config.db_url, target)
        assert [name for name, _, _ in moved.tables] == [t.name for t in catalogue_of(node.config.db_url)]
        assert all(mine == theirs for _, mine, theirs in moved.tables)
        assert canonical_tables(target) == source  # row for row, value for value
        assert moved.rows == sum(len(rows) for rows in source.values())
        assert schema.current_version_txn(Txn(create_engine(target).connect().cursor(), create_engine(target))) \
            == len(schema.load_steps(create_engine(target).name))


@pytest.mark.mysql
def test_copy_sqlite_to_mysql_and_back(tmp_path, nodes):
    """The operator's move: SQLite to MariaDB (and back), the same rows and checksums."""
    from support import make_config, make_node

    sqlite_node = make_node(make_config(tmp_path / "s", sqlite_url(tmp_path / "s" / "node.db"),
                                        seeded_pool="4096:6", seeded_challenges=4, max_tokens_per_ip=0))
    try:
        from support import run

        run(sqlite_node.pool.refill())
        populate(sqlite_node, tmp_path, sqlite_node.clock)
        source = canonical_tables(sqlite_node.config.db_url)
        fresh_mysql_database(MYSQL_URL)
        there = copy_database(sqlite_node.config.db_url, MYSQL_URL)
        assert canonical_tables(MYSQL_URL) == source
        back = copy_database(MYSQL_URL, sqlite_url(tmp_path / "back.db"))
        assert canonical_tables(sqlite_url(tmp_path / "back.db")) == source
        assert [(n, s.checksum) for n, s, _ in there.tables] == [(n, s.checksum) for n, s, _ in back.tables]
    finally:
        sqlite_node.db.close()


def test_the_target_must_be_empty_and_is_left_alone(node, tmp_path, clock):
    populate(node, tmp_path, clock)
    with pytest.raises(TransferError, match="the node's own database"):
        copy_database(node.config.db_url, node.config.db_url)
    used = tmp_path / "used.db"
    conn = sqlite3.connect(used)
    conn.execute("CREATE TABLE mine (x INTEGER)")
    conn.execute("INSERT INTO mine VALUES (1)")
    conn.commit()
    conn.close()
    before = used.read_bytes()
    with pytest.raises(TransferError, match=f"the target {used} is not empty: it has tables already"):
        copy_database(node.config.db_url, sqlite_url(used))
    assert used.read_bytes() == before
    if node.db.engine.name == "mysql":
        full = other_mysql_url("full")
        copy_database(node.config.db_url, full)
        with pytest.raises(TransferError, match="is not empty: it has .* tables .* DROP DATABASE"):
            copy_database(node.config.db_url, full)


def test_a_failed_copy_leaves_the_target_empty(node, tmp_path, clock, monkeypatch):
    populate(node, tmp_path, clock)
    calls = []
    real = Target.insert

    def failing(self, table, rows):
        calls.append(table.name)
        if len(calls) == 3:
            raise OSError("disk full")
        return real(self, table, rows)

    monkeypatch.setattr(Target, "insert", failing)
    for target in copy_targets(tmp_path, node.db.engine.name):
        calls.clear()
        with pytest.raises(OSError, match="disk full"):
            copy_database(node.config.db_url, target)
        engine = create_engine(target)
        if engine.name == "sqlite":
            assert os.listdir(tmp_path / "target") == []  # neither the file nor its partial build
        else:
            conn = engine.connect()
            from downstream_tx.db.transfer import table_names_txn

            assert table_names_txn(Txn(conn.cursor(), engine)) == []
            conn.close()
        monkeypatch.setattr(Target, "insert", real)
        copy_database(node.config.db_url, target)  # and it is usable for the next attempt
        monkeypatch.setattr(Target, "insert", failing)
        shutil.rmtree(tmp_path / "target", ignore_errors=True)
        if engine.name == "mysql":
            fresh_mysql_database(target)


def test_the_source_is_read_as_of_one_moment(node, tmp_path, clock):
    """A write the live node commits while the copy runs is not half in it: the copy is the
    snapshot's (SQLite's read transaction on its WAL file, InnoDB's consistent snapshot)."""
    populate(node, tmp_path, clock)
    before = canonical_tables(node.config.db_url)
    snapshot = open_snapshot(node.config.db_url)
    try:
        # the node goes on: a token and a reputation row more, a file removed
        from support import run

        run(node.v0.create_token(make_address(9)))
        tables = {t.name: t for t in snapshot.tables}
        read = {name: sorted((row for page in snapshot.pages(tables[name]) for row in page), key=repr)
                for name in before}
        assert read == before
        assert snapshot.counts["tokens"] == len(before["tokens"])
    finally:
        snapshot.close()
    assert len(canonical_tables(node.config.db_url)["tokens"]) == len(before["tokens"]) + 1


def test_large_tables_are_read_in_pages_by_primary_key(node, tmp_path, clock):
    populate(node, tmp_path, clock)
    engine = create_engine(node.config.db_url)
    conn = engine.connect()
    try:
        txn = Txn(conn.cursor(), engine)
        for table in catalogue_txn(txn):
            whole = [row for page in pages_txn(txn, table, 100_000) for row in page]
            pages = list(pages_txn(txn, table, 3))
            assert [row for page in pages for row in page] == whole, table.name
            assert all(len(page) <= 3 for page in pages)
        history = {t.name: t for t in catalogue_txn(txn)}["history"]
        assert history.primary_key == ("hour", "source")  # a two-column key pages too
        assert len(list(pages_txn(txn, history, 2))) >= 3
    finally:
        conn.close()


def test_ids_are_never_reused_after_a_copy(node, tmp_path, clock):
    """The id sequences move with the rows: a row deleted at the end of a table in the source (an
    archived contract, a deleted token) does not give its id to the target's next row."""
    populate(node, tmp_path, clock)
    from support import run

    extra = run(node.v0.create_token(make_address(11)))
    engine = create_engine(node.config.db_url)
    conn = engine.connect()
    txn = Txn(conn.cursor(), engine)
    last_id = int(txn.scalar("SELECT MAX(id) FROM tokens"))
    txn.execute("DELETE FROM tokens WHERE id = ?", (last_id,))
    conn.commit()
    conn.close()
    assert extra
    for target in copy_targets(tmp_path, node.db.engine.name):
        copy_database(node.config.db_url, target)
        engine = create_engine(target)
        conn = engine.connect()
        txn = Txn(conn.cursor(), engine)
        txn.execute("INSERT INTO tokens (token_hash, farmer_id, address, created) VALUES (?, ?, ?, ?)",
                    (os.urandom(32), "0" * 20, make_address(12), 1.0))
        assert int(txn.scalar("SELECT MAX(id) FROM tokens")) > last_id
        conn.rollback()
        conn.close()


def test_tables_added_by_later_schema_steps_are_copied(tmp_path, db_url):
    """No table list here: a table another schema step adds (issue 20's download counts, say) is
    found in the catalogue and copied in its foreign-key place."""
    from support import make_config, make_node, run

    steps = tmp_path / "schema"
    shutil.copytree(os.path.join(os.path.dirname(schema.__file__), "schema"), steps)
    version = len(schema.load_steps("sqlite")) + 1
    for engine, suffix in (("sqlite", ""), ("mysql", " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin")):
        (steps / f"{version:03d}_downloads.{engine}.sql").write_text(
            "CREATE TABLE download_counts (\n    contract_id BIGINT NOT NULL PRIMARY KEY REFERENCES contracts (id),\n"
            f"    downloads INTEGER NOT NULL DEFAULT 0,\n    last DOUBLE\n){suffix};\n")
    node = make_node(make_config(tmp_path, db_url))
    try:
        run(node.db.run("s", schema.upgrade_txn, schema.load_steps(node.db.engine.name, str(steps))))
        populate(node, tmp_path, node.clock)
        run(node.db.run("d", lambda txn: txn.execute(
            "INSERT INTO download_counts (contract_id, downloads, last) SELECT id, 2, 1.5 FROM contracts")))
        target = sqlite_url(tmp_path / "t" / "copy.db")
        moved = copy_database(node.config.db_url, target, steps=schema.load_steps("sqlite", str(steps)))
        names = [name for name, _, _ in moved.tables]
        assert names.index("download_counts") > names.index("contracts")
        assert canonical_tables(target)["download_counts"] == canonical_tables(node.config.db_url)["download_counts"]
        assert len(canonical_tables(target)["download_counts"]) >= 1
    finally:
        node.db.close()


def test_a_source_that_does_not_exist_is_refused_and_not_made(tmp_path):
    missing = tmp_path / "none" / "downstream.db"
    with pytest.raises(TransferError, match=f"no database at {missing}"):
        open_snapshot(sqlite_url(missing))
    assert not missing.exists() and not missing.parent.exists()


def test_the_stored_chunks_of_a_snapshot_are_read_in_pages(node, tmp_path):
    from support import add_test_file

    made = sorted(add_test_file(node, tmp_path, size=1024) for _ in range(5))
    snapshot = open_snapshot(node.config.db_url)
    try:
        assert sorted(snapshot.stored_chunks(page=2)) == made == sorted(snapshot.stored_chunks())
    finally:
        snapshot.close()
