"""Versioned schema on both engines: create, upgrade, refuse newer, idempotent."""

import os
import stat

import pytest

from downstream_tx.db import contracts, schema
from support import make_config, open_test_db, run


def steps_for(db):
    return schema.load_steps(db.engine.name)


def table_names(db):
    def body(txn):
        if txn.engine_name == "sqlite":
            rows = txn.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall()
        else:
            rows = txn.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE()"
                               ).fetchall()
        return {r[0] for r in rows}
    return run(db.run("tables", body))


def test_steps_are_complete_for_both_engines():
    sqlite = schema.load_steps("sqlite")
    mysql = schema.load_steps("mysql")
    assert [s.version for s in sqlite] == [s.version for s in mysql] == list(range(1, len(sqlite) + 1))
    assert len(sqlite) >= 2


def test_create_from_empty(tmp_path, empty_db_url, clock):
    db = open_test_db(make_config(tmp_path, empty_db_url), clock, upgrade=False)
    before, after = run(db.run("schema", schema.upgrade_txn, steps_for(db)))
    assert (before, after) == (0, len(steps_for(db)))
    assert {"tokens", "files", "contracts", "challenges", "challenge_batches", "addresses", "node_meta",
            "seeded_pool", "schema_version"} <= table_names(db)
    # running again changes nothing
    assert run(db.run("schema", schema.upgrade_txn, steps_for(db))) == (after, after)
    db.close()


def test_upgrade_from_version_1_keeps_data(tmp_path, empty_db_url, clock):
    db = open_test_db(make_config(tmp_path, empty_db_url), clock, upgrade=False)
    steps = steps_for(db)
    run(db.run("v1", schema.upgrade_txn, steps[:1]))
    run(db.run("row", lambda txn: txn.execute(
        "INSERT INTO addresses (address, balance, active, updated) VALUES ('a', 5, 1, 0)")))
    assert "seeded_pool" not in table_names(db)
    before, after = run(db.run("upgrade", schema.upgrade_txn, steps))
    assert (before, after) == (1, len(steps))
    assert "seeded_pool" in table_names(db)
    assert run(db.run("read", lambda txn: txn.scalar("SELECT balance FROM addresses WHERE address = 'a'"))) == 5
    db.close()


def test_step_5_moves_v1_tags_off_the_contract_rows(tmp_path, empty_db_url, clock):
    db = open_test_db(make_config(tmp_path, empty_db_url), clock, upgrade=False)
    steps = steps_for(db)
    run(db.run("v4", schema.upgrade_txn, steps[:4]))

    def old_rows(txn):
        txn.execute("INSERT INTO tokens (token_hash, farmer_id, address, created) VALUES (?, 'f', 'a', 0)",
                    (b"t" * 32,))
        token_id = txn.lastrowid
        txn.execute("INSERT INTO files (file_hash, kind, size, redundancy, interval_s, added) "
                    "VALUES (?, 'seeded', 1, 1, 60, 0)", ("ab" * 32,))
        file_id = txn.lastrowid
        for tag in ('{"tree": 1}', None):
            txn.execute("INSERT INTO contracts (token_id, file_id, protocol, state, start, interval_s, hb_state, "
                        "hb_challenge, tag) VALUES (?, ?, 1, 'active', 0, 60, '{}', '{}', ?)", (token_id, file_id, tag))
        return txn.lastrowid - 1

    first = run(db.run("old", old_rows))
    run(db.run("upgrade", schema.upgrade_txn, steps))

    def read(txn):
        return (txn.execute("SELECT contract_id, tag FROM contract_tags").fetchall(),
                txn.scalar("SELECT COUNT(*) FROM contracts WHERE tag IS NOT NULL"),
                txn.scalar("SELECT COUNT(*) FROM contracts WHERE hb_state = '{}' AND hb_seed IS NULL"))

    assert run(db.run("read", read)) == ([(first, '{"tree": 1}')], 0, 2)
    db.close()


def test_newer_database_refused(tmp_path, db_url, clock):
    db = open_test_db(make_config(tmp_path, db_url), clock)
    run(db.run("bump", lambda txn: txn.execute("UPDATE schema_version SET version = 99")))
    with pytest.raises(schema.SchemaError, match="schema version 99, newer than this downstream-tx knows"):
        run(db.run("schema", schema.upgrade_txn, steps_for(db)))
    db.close()


def test_step_13_indexes_the_replicas_a_file_misses_and_the_assignment_walks_that_index(tmp_path, empty_db_url, clock):
    """Files written before step 13 get ``missing`` (redundancy - replicas), kept by the database
    as replicas change; the assignment's pick walks files_urgent / files_missing in its order and
    needs no sort, so the files at their target are not read (issue: a scan of every file)."""
    db = open_test_db(make_config(tmp_path, empty_db_url), clock, upgrade=False)
    steps = steps_for(db)
    run(db.run("v12", schema.upgrade_txn, steps[:12]))
    rows = [("stored", 3, 3, None)] * 300 + [("stored", 3, 1, None), ("stored", 2, 1, None),
                                             ("stored", 3, 0, 5.0), ("seeded", 3, 0, None)]

    def fill(txn):
        for i, (kind, redundancy, replicas, removed) in enumerate(rows):
            txn.execute("INSERT INTO files (file_hash, kind, size, redundancy, interval_s, replicas, added, removed) "
                        "VALUES (?, ?, 1, ?, 60, ?, 0, ?)", (f"{i:064x}", kind, redundancy, replicas, removed))
    run(db.run("fill", fill))
    assert run(db.run("upgrade", schema.upgrade_txn, steps)) == (12, len(steps))

    def missing(txn):
        return txn.execute("SELECT missing FROM files ORDER BY id").fetchall()
    assert [r[0] for r in run(db.run("read", missing))] == [0] * 300 + [2, 1, 3, 3]
    run(db.run("take", lambda txn: txn.execute("UPDATE files SET replicas = replicas + 1 WHERE id = ?", (301,))))
    assert run(db.run("read", missing))[300][0] == 1

    def plan(txn, urgent_first):
        sql = contracts.assign_query(urgent_first)
        if txn.engine_name == "sqlite":
            return [str(r[3]) for r in txn.execute("EXPLAIN QUERY PLAN " + sql, (1, "n", "a", 1, "a")).fetchall()]
        txn.execute("ANALYZE TABLE files")
        return [f"{r[2]} {r[5]} {r[9]}" for r in txn.execute("EXPLAIN " + sql, (1, "n", "a", 1, "a")).fetchall()]
    # (descending index columns: MySQL 8, MariaDB 10.8+; an older MariaDB sorts the urgent order's
    # files below their target, and this test says so)
    for urgent_first, index in ((True, "files_urgent"), (False, "files_missing")):
        steps_of_plan = run(db.run("plan", plan, urgent_first))
        files = [step for step in steps_of_plan if " f " in f" {step} " or step.startswith("f ")]
        assert len(files) == 1 and index in files[0], steps_of_plan
        assert not any("TEMP B-TREE" in step or "filesort" in step for step in steps_of_plan), steps_of_plan
    db.close()


def test_step_files_validated(tmp_path):
    (tmp_path / "001_a.sql").write_text("CREATE TABLE a (x INTEGER);")
    (tmp_path / "003_c.sql").write_text("CREATE TABLE c (x INTEGER);")
    with pytest.raises(schema.SchemaError, match="without gaps"):
        schema.load_steps("sqlite", str(tmp_path))
    (tmp_path / "003_c.sql").unlink()
    (tmp_path / "001_a.sqlite.sql").write_text("CREATE TABLE a (x INTEGER);")
    with pytest.raises(schema.SchemaError, match="two schema files for version 1"):
        schema.load_steps("sqlite", str(tmp_path))


def test_sqlite_backup_copy(tmp_path, clock):
    config = make_config(tmp_path)
    db = open_test_db(config, clock)
    path = config.db_url[len("sqlite:///"):]
    db.close()
    assert schema.sqlite_version_of(path) == len(schema.load_steps("sqlite"))
    old = os.umask(0)
    try:
        backup = schema.backup_sqlite(path, 1)
    finally:
        os.umask(old)
    assert backup.endswith(".v1.bak")
    assert stat.S_IMODE(os.stat(backup).st_mode) == 0o600  # it holds the node secret: created private
    assert schema.sqlite_version_of(backup) == schema.sqlite_version_of(path)
    assert schema.sqlite_version_of(str(tmp_path / "none.db")) == 0


def test_a_server_engine_waits_for_the_upgrade_without_the_pools_read_timeout(tmp_path, monkeypatch):
    """A schema step's ALTER TABLE over a large table outlasts the pool's 60 s read timeout (step 13:
    ~100 s on 3.3M files), which would drop the connection while the server commits the change:
    the node upgrades on a connection of its own with no read timeout, and closes it after."""
    from downstream_tx import runtime
    from downstream_tx.db.engine import create_engine

    assert create_engine("mysql://u:p@127.0.0.1:1/d").pool_args(1)["connkw"]["read_timeout"] == 60
    made, closed = [], []

    class Upgrader:
        async def run(self, desc, func, steps):
            assert (desc, func) == ("schema_upgrade", schema.upgrade_txn)
            return 12, 13

        def close(self):
            closed.append(True)

    def connect(engine, reactor, **kwargs):
        made.append(engine.pool_args(kwargs["pool_size"])["connkw"])
        return Upgrader()

    monkeypatch.setattr(runtime.Database, "connect", connect)
    config = make_config(tmp_path, "mysql://u:p@127.0.0.1:1/d")
    assert run(runtime._upgrade_server(config, None, [])) == (12, 13)
    assert [(kw["read_timeout"], kw["write_timeout"]) for kw in made] == [(None, None)] and closed == [True]


def test_a_v0_answer_reaches_its_contract_from_the_file_not_from_the_farmers_contracts(tmp_path, db_url, clock):
    """The answer's statement reads the contract through files_hash and contracts_file (the file's
    few contracts), never through contracts_token (every active contract of the farmer: 1,000 rows
    per answer for a farmer of 1,000 contracts, measured on MariaDB — docs/capacity.md)."""
    db = open_test_db(make_config(tmp_path, db_url), clock)

    def fill(txn):
        for t in range(1, 5):
            txn.execute("INSERT INTO tokens (token_hash, farmer_id, address, created) VALUES (?, ?, 'a', 0)",
                        (bytes([t]) * 32, f"{t:020d}"))
        farmer = txn.execute("SELECT id FROM tokens WHERE token_hash = ?", (bytes([1]) * 32,)).fetchone()[0]
        others = [r[0] for r in txn.execute("SELECT id FROM tokens WHERE id <> ?", (farmer,)).fetchall()]
        for i in range(1000):
            txn.execute("INSERT INTO files (file_hash, kind, size, redundancy, interval_s, added) "
                        "VALUES (?, 'stored', 1, 4, 60, 0)", (f"{i:064x}",))
            file_id = txn.execute("SELECT id FROM files WHERE file_hash = ?", (f"{i:064x}",)).fetchone()[0]
            for token in [farmer] + (others if i == 7 else []):
                txn.execute("INSERT INTO contracts (token_id, file_id, state, start, interval_s) "
                            "VALUES (?, ?, 'active', 0, 60)", (token, file_id))
    run(db.run("fill", fill))

    def plan(txn):
        sql = contracts.answer_by_token_sql(txn.for_update())
        args = (0.0, 0.0, f"{7:064x}", bytes([1]) * 32)
        if txn.engine_name == "sqlite":
            txn.execute("ANALYZE")
            return [str(r[3]) for r in txn.execute("EXPLAIN QUERY PLAN " + sql, args).fetchall()]
        for table in ("tokens", "files", "contracts"):
            txn.execute(f"ANALYZE TABLE {table}")
        return [f"{r[2]} {r[5]} {r[6]}" for r in txn.execute("EXPLAIN " + sql, args).fetchall()]
    steps = run(db.run("plan", plan))
    of = {alias: [s for s in steps if s.startswith(f"{alias} ") or f" {alias} " in s] for alias in ("f", "fc")}
    assert len(of["fc"]) == 1 and "contracts_file" in of["fc"][0], steps
    assert len(of["f"]) == 1 and "files_hash" in of["f"][0], steps
    assert not any("contracts_token" in s for s in steps), steps

    def answer(txn):
        return txn.execute(contracts.answer_by_token_sql(), (0.0, 0.0, f"{7:064x}", bytes([1]) * 32)).fetchall()
    rows = run(db.run("answer", answer))
    assert len(rows) == 1 and rows[0][len(contracts.TOKEN_COLUMNS.split(", "))] is not None
    db.close()
