"""The node's schema on MariaDB Spider: a head and two backends (tests/support/spider.py, started once
per module), the per-farmer tables partitioned by farmer across the backends.

What docs/capacity.md ("Write sharding: MariaDB Spider") reports, checked here so that it stays
true: the cluster script starts and stops every server and leaves no process behind; the node's
schema is sharded (rows of one table on both backends, the seed rows kept); AUTO_INCREMENT ids stay
unique across shards through one head; a unique key is enforced per shard only; ``SELECT … FOR
UPDATE`` through the head locks the backend's row; a transaction over both backends is not atomic
without ``spider_internal_xa`` (a COMMIT that fails when a backend dies leaves the other backend's
half committed) and is with it; and a schema step through the head (ALTER TABLE … ADD COLUMN)
changes only the head's definition, so the table is unusable until every backend is altered too,
and an upgrade step whose new table references a sharded one fails; ``INSTR`` returns nothing (it
is sent to the backends with its arguments swapped); a DELETE on a partitioned table reports no
rows though it deleted them.

These tests need ``mariadb-server``, ``mariadb-plugin-spider``, root and ``DOWNSTREAM_TEST_SPIDER_TRIAL=1``
(they record the trial's findings about an engine the node does not run on, so the default suite and CI
leave them out); otherwise they are skipped with the reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time

import pymysql
import pytest

from support import spider
from support.daemon import ROOT

pytestmark = [pytest.mark.spider, pytest.mark.slow]

DATABASE = "dtx_spider_t"
TRIAL_ENV = "DOWNSTREAM_TEST_SPIDER_TRIAL"


@pytest.fixture(scope="module")
def cluster():
    if not os.environ.get(TRIAL_ENV):
        pytest.skip(f"the Spider trial's tests run with {TRIAL_ENV}=1 (the node does not run on Spider, "
                    "docs/capacity.md)")
    reason = spider.missing()
    if reason:
        pytest.skip(reason)
    base = tempfile.mkdtemp(prefix="dtx-spider-")
    c = spider.Cluster(base, database=DATABASE)
    try:
        c.start(stop_at_exit=True)
        c.shard(DATABASE)
        yield c
    finally:
        c.stop()
        left = spider.leftovers(base)
        shutil.rmtree(base, ignore_errors=True)
    assert left == [], f"processes left running after the cluster stopped: {left}"


def connect(cluster: spider.Cluster, autocommit: bool = True) -> pymysql.Connection:
    return pymysql.connect(host="127.0.0.1", port=cluster.head.port, user=cluster.user, password=cluster.password,
                           database=DATABASE, autocommit=autocommit)


def query(conn, sql: str, args=None) -> tuple:
    with conn.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchall()


def on(cluster: spider.Cluster, backend: str, sql: str) -> list[list[str]]:
    return cluster.sql(backend, f"USE `{DATABASE}`; {sql}")


def add_tokens(conn, n: int, prefix: str) -> list[int]:
    ids = []
    for i in range(n):
        query(conn, "INSERT INTO tokens (token_hash, farmer_id, address, created) VALUES (%s, 'f', %s, 0)",
              (f"{prefix}{i}".encode(), f"{prefix}-addr{i}"))
        ids.append(query(conn, "SELECT LAST_INSERT_ID()")[0][0])
    return ids


def test_cluster_script_status_and_sharded_schema(cluster: spider.Cluster):
    status = subprocess.run([str(ROOT / "contrib" / "spider" / "cluster.sh"), "status", cluster.base],
                            capture_output=True, text=True, timeout=60)
    assert status.returncode == 0, status.stderr
    assert status.stdout.count(": running") == 3, status.stdout
    engines = cluster.spider_tables(DATABASE)
    assert {"contracts", "tokens", "leases", "schema_version", "txn_outcomes"} <= set(engines)
    assert set(engines.values()) == {"SPIDER"}
    # the seed rows survived the move (ALTER … ENGINE=SPIDER alone drops them)
    conn = connect(cluster)
    assert query(conn, "SELECT holder, generation FROM leases WHERE name = 'jobs'") == (("", 0),)
    assert query(conn, "SELECT COUNT(*) FROM vetting") == ((2,),)
    # per-farmer tables on both backends, the others on backend 1 only
    assert "contracts" in {r[0] for r in on(cluster, "b2", "SHOW TABLES")}
    assert "leases" not in {r[0] for r in on(cluster, "b2", "SHOW TABLES")}


def test_ids_are_unique_across_shards_but_unique_keys_are_per_shard(cluster: spider.Cluster):
    conn = connect(cluster)
    ids = add_tokens(conn, 6, "u")
    assert len(set(ids)) == 6
    b1 = {int(r[0]) for r in on(cluster, "b1", "SELECT id FROM tokens WHERE token_hash LIKE 'u%'")}
    b2 = {int(r[0]) for r in on(cluster, "b2", "SELECT id FROM tokens WHERE token_hash LIKE 'u%'")}
    assert b1 and b2 and b1 | b2 == set(ids) and not b1 & b2
    # token_hash is UNIQUE on each backend, but a copy that lands on the other shard is not checked
    accepted = 0
    for i in range(4):
        try:
            query(conn, "INSERT INTO tokens (token_hash, farmer_id, address, created) VALUES (%s, 'f', 'dup', 0)",
                  (f"u{i}".encode(),))
            accepted += 1
        except pymysql.err.IntegrityError:  # the copy landed on the original's shard
            pass
    assert accepted > 0
    assert query(conn, "SELECT COUNT(*) FROM tokens WHERE token_hash IN ('u0', 'u1', 'u2', 'u3')")[0][0] == 4 + accepted


@pytest.mark.parametrize("table", ["leases", "tokens"])
def test_select_for_update_locks_the_backend_row(cluster: spider.Cluster, table: str):
    # by primary key: the lease row (backend 1), a token (partitioned by id: one shard)
    key = "name = 'jobs'" if table == "leases" else f"id = {add_tokens(connect(cluster), 1, 'lock-')[0]}"
    first, second = connect(cluster, autocommit=False), connect(cluster, autocommit=False)
    query(first, "BEGIN")
    query(first, f"SELECT * FROM {table} WHERE {key} FOR UPDATE")
    got: list[float] = []

    def other() -> None:
        start = time.monotonic()
        query(second, "BEGIN")
        query(second, f"SELECT * FROM {table} WHERE {key} FOR UPDATE")
        got.append(time.monotonic() - start)

    thread = threading.Thread(target=other)
    thread.start()
    thread.join(1.5)
    assert got == [], "the second locking read did not wait for the first transaction"
    first.commit()
    thread.join(30)
    assert got and got[0] >= 1.5
    second.commit()


def _two_shard_commit_with_a_backend_killed(cluster: spider.Cluster, xa: bool) -> tuple[int, int]:
    conn = connect(cluster)
    a, b = add_tokens(conn, 2, f"xa{int(xa)}-")
    shard_of = {int(r[0]): "b1" for r in on(cluster, "b1", f"SELECT id FROM tokens WHERE id IN ({a}, {b})")}
    assert len(shard_of) == 1, "the two tokens should be on different backends"
    (on_b1,) = shard_of
    on_b2 = b if on_b1 == a else a
    txn = connect(cluster, autocommit=False)
    query(txn, f"SET SESSION spider_internal_xa = {int(xa)}")
    query(txn, "BEGIN")
    query(txn, "UPDATE tokens SET hbcount = hbcount + 1 WHERE id = %s", (on_b1,))
    query(txn, "UPDATE tokens SET hbcount = hbcount + 1 WHERE id = %s", (on_b2,))
    cluster.kill_server("b2")
    try:
        with pytest.raises(pymysql.err.OperationalError, match="gone away"):
            txn.commit()
    finally:
        cluster.start_server("b2")
    read = f"SELECT id, hbcount FROM tokens WHERE id IN ({a}, {b})"
    try:
        after = dict(query(connect(cluster), read))
    except pymysql.err.OperationalError as e:
        # the head keeps its backend connections (spider_conn_recycle_mode=1): the first statement
        # that takes the one to the restarted backend finds it dead, once
        assert e.args[0] == 12701, e
        after = dict(query(connect(cluster), read))
    return after[on_b1], after[on_b2]


def test_a_transaction_over_both_backends_is_not_atomic_without_xa(cluster: spider.Cluster):
    # the client is told the COMMIT failed, yet backend 1's half is committed
    assert _two_shard_commit_with_a_backend_killed(cluster, xa=False) == (1, 0)


def test_a_transaction_over_both_backends_is_atomic_with_internal_xa(cluster: spider.Cluster):
    assert _two_shard_commit_with_a_backend_killed(cluster, xa=True) == (0, 0)


def test_a_schema_step_through_the_head_changes_only_the_head(cluster: spider.Cluster):
    conn = connect(cluster)
    query(conn, "ALTER TABLE history ADD COLUMN probe INTEGER NOT NULL DEFAULT 0")  # accepted…
    try:
        with pytest.raises(pymysql.err.OperationalError, match=r"Unknown column '(t0\.)?probe'"):
            query(conn, "SELECT * FROM history")  # …but the backend's table has no such column
        assert "probe" not in {r[0] for r in on(cluster, "b1", "SHOW COLUMNS FROM history")}
    finally:
        query(conn, "ALTER TABLE history DROP COLUMN probe")
    # a new step's CREATE TABLE makes an ordinary InnoDB table on the head, on no backend
    query(conn, "CREATE TABLE probe_step (id INTEGER NOT NULL PRIMARY KEY) ENGINE=InnoDB")
    try:
        assert cluster.spider_tables(DATABASE)["probe_step"] == "InnoDB"
    finally:
        query(conn, "DROP TABLE probe_step")


def test_an_upgrade_step_referencing_a_sharded_table_fails(cluster: spider.Cluster):
    """Schema step 2's CREATE TABLE (``file_id … REFERENCES files (id)``) through the head, as an
    upgrade from version 1 runs it: ``files`` is a Spider table now."""
    from downstream_tx.db import schema
    from downstream_tx.db.database import split_statements

    create = next(s for s in split_statements(schema.load_steps("mysql")[1].sql) if "CREATE TABLE" in s)
    with pytest.raises(pymysql.err.OperationalError, match="errno: 150"):
        query(connect(cluster), create.replace("seeded_pool", "seeded_pool_again"))


def test_instr_is_sent_to_the_backends_with_its_arguments_swapped(cluster: spider.Cluster):
    query(connect(cluster), "INSERT INTO tokens (token_hash, farmer_id, address, created) "
                            "VALUES ('instr', 'f', 'instr-probe-address', 0)")
    conn = connect(cluster)
    assert query(conn, "SELECT COUNT(*) FROM tokens WHERE address LIKE '%probe-addr%'") == ((1,),)
    # the node's address search (db/status.py): INSTR(address, ?) becomes locate(address, ?)
    assert query(conn, "SELECT COUNT(*) FROM tokens WHERE INSTR(address, 'probe-addr') > 0") == ((0,),)
    counts = [on(cluster, b, "SELECT COUNT(*) FROM tokens WHERE INSTR(address, 'probe-addr') > 0")[0][0]
              for b in ("b1", "b2")]
    assert sorted(counts) == ["0", "1"]


def test_a_delete_on_a_partitioned_table_reports_no_rows(cluster: spider.Cluster):
    conn = connect(cluster)
    query(conn, "INSERT INTO contracts (token_id, file_id, state, start, interval_s) VALUES (7, 1, 'ended', 0, 60)")
    contract = query(conn, "SELECT LAST_INSERT_ID()")[0][0]
    with conn.cursor() as cur:
        assert cur.execute("DELETE FROM contracts WHERE id = %s AND state <> 'active'", (contract,)) == 0
    assert query(conn, "SELECT COUNT(*) FROM contracts WHERE id = %s", (contract,)) == ((0,),)  # yet deleted
