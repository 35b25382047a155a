"""The node on a 3-node MariaDB Galera cluster (tests/support/galera.py, started once per module).

Checked: the cluster script starts, stops and restarts nodes and leaves no process behind; the
schema is created through one node and every table is InnoDB with a primary key on all of them; a
certification conflict (another node committed the same row first) fails at commit with a deadlock
and ``Database.run`` re-runs the transaction; a node outside the primary component (isolated)
answers 1047, the connection that got it is dropped and the next goes to another server of the
URL; and end to end, instances on different nodes under v0 + v1 farmer load, one Galera node
killed: nothing acknowledged is lost, the instance on the dead node keeps serving through another
node, an instance whose URL names only the dead node answers 503 and comes back with it.

These tests need ``galera-4``, ``mariadb-server``, ``rsync`` and root. Without them they are
skipped with the reason, unless ``DOWNSTREAM_TEST_MYSQL_URL`` is set (CI): then they fail, as
MySQL tests do when MySQL is missing.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from twisted.internet import task

from downstream_tx.db import schema
from downstream_tx.db.database import Database, Txn
from downstream_tx.db.engine import create_engine
from support import MYSQL_ENV, MYSQL_URL, galera, make_address, wait_until
from support.daemon import ROOT, Daemon, daemon_env
from support.fault_load import DbView, V0Farmer, V1Farmer, http_get

pytestmark = [pytest.mark.galera, pytest.mark.e2e, pytest.mark.slow]

ADMIN = [sys.executable, "-c", "from downstream_tx.admin import entry; entry()"]
DATABASE = "dtx_gal"
INTERVAL = 4


@pytest.fixture(scope="module")
def cluster():
    reason = galera.missing()
    if reason:
        if MYSQL_URL:
            pytest.fail(f"the Galera tests are required when {MYSQL_ENV} is set (as in CI): {reason}")
        pytest.skip(reason)
    base = tempfile.mkdtemp(prefix="dtx-galera-")
    c = galera.Cluster(base, database=DATABASE)
    try:
        c.start(stop_at_exit=True)
        yield c
    finally:
        c.stop()
        left = galera.leftovers(base)
        shutil.rmtree(base, ignore_errors=True)
    assert left == [], f"processes left running after the cluster stopped: {left}"


def fresh(cluster: galera.Cluster, name: str) -> str:
    """A new empty database (on every node) and the URL listing every node."""
    cluster.sql(1, f"DROP DATABASE IF EXISTS `{name}`; CREATE DATABASE `{name}` CHARACTER SET utf8mb4 "
                   "COLLATE utf8mb4_bin")
    return cluster.url(database=name)


def sync_db(url: str, clock=None) -> Database:
    from support import InlinePool

    engine = create_engine(url)
    # the tests' own tables only (no txn_outcomes): nothing recorded
    return Database(engine, InlinePool(engine), clock or task.Clock(), backoff=0, record_outcomes=False)


def result_of(d, clock: task.Clock):
    """The result of a Deferred that fires after the retry back-off (``clock.advance``)."""
    out: list = []
    d.addBoth(out.append)
    for _ in range(10):
        if out:
            break
        clock.advance(1)
    assert out, "the Deferred did not fire"
    if hasattr(out[0], "raiseException"):
        out[0].raiseException()
    return out[0]


def test_cluster_script_starts_stops_and_restarts_nodes(cluster: galera.Cluster):
    assert [cluster.status(i)["wsrep_cluster_size"] for i in (1, 2, 3)] == ["3", "3", "3"]
    status = subprocess.run([str(ROOT / "contrib" / "galera" / "cluster.sh"), "status", cluster.base],
                            capture_output=True, text=True, timeout=60)
    assert status.returncode == 0, status.stderr
    assert status.stdout.count("Synced, cluster size 3, Primary") == 3, status.stdout
    # a write on one node is on the others
    cluster.sql(1, f"CREATE TABLE `{DATABASE}`.probe (id INT PRIMARY KEY) ENGINE=InnoDB; "
                   f"INSERT INTO `{DATABASE}`.probe VALUES (7)")
    for i in (2, 3):
        assert cluster.sql(i, f"SET SESSION wsrep_sync_wait = 1; SELECT id FROM `{DATABASE}`.probe") == [["7"]]
    pid = cluster.nodes[2].pid
    cluster.stop_node(3)
    assert not galera.group_alive(pid)
    cluster.wait_synced([1, 2])
    cluster.sql(2, f"INSERT INTO `{DATABASE}`.probe VALUES (8)")
    cluster.start_node(3)  # rejoins and catches up (IST)
    cluster.wait_synced()
    assert cluster.sql(3, f"SELECT id FROM `{DATABASE}`.probe ORDER BY id") == [["7"], ["8"]]
    cluster.sql(1, f"DROP TABLE `{DATABASE}`.probe")


def test_schema_on_galera(cluster: galera.Cluster):
    url = fresh(cluster, "dtx_gal_schema")
    db = sync_db(url)
    try:
        steps = schema.load_steps("mysql")
        result_of(db.run("schema", schema.upgrade_txn, steps), db.clock)
    finally:
        db.pool.close()
    rows = cluster.sql(3, "SET SESSION wsrep_sync_wait = 1; SELECT t.table_name, t.engine, "
                          "(SELECT COUNT(*) FROM information_schema.table_constraints c WHERE "
                          "c.table_schema = t.table_schema AND c.table_name = t.table_name AND "
                          "c.constraint_type = 'PRIMARY KEY') FROM information_schema.tables t "
                          "WHERE t.table_schema = 'dtx_gal_schema'")
    assert {"schema_version", "contracts", "seeded_pool", "history"} <= {r[0] for r in rows}
    # Galera replicates InnoDB only, and certifies rows by their primary key
    assert [r for r in rows if r[1] != "InnoDB" or r[2] != "1"] == []
    assert cluster.sql(2, "SET SESSION wsrep_sync_wait = 1; SELECT version FROM dtx_gal_schema.schema_version") \
        == [[str(steps[-1].version)]]


def test_certification_conflict_is_retried(cluster: galera.Cluster):
    fresh(cluster, "dtx_gal_conflict")
    cluster.sql(1, "CREATE TABLE dtx_gal_conflict.t (id INT PRIMARY KEY, v INT) ENGINE=InnoDB; "
                   "INSERT INTO dtx_gal_conflict.t VALUES (1, 0)")
    clock = task.Clock()
    db = sync_db(cluster.url(1, "dtx_gal_conflict"), clock)
    other = create_engine(cluster.url(2, "dtx_gal_conflict")).connect()
    attempts = []

    def body(txn: Txn) -> int:
        attempts.append(1)
        txn.execute("UPDATE t SET v = v + 1 WHERE id = 1")
        if len(attempts) == 1:
            # another node changes the same row and commits first: this commit fails certification
            with other.cursor() as cursor:
                cursor.execute("UPDATE t SET v = v + 10 WHERE id = 1")
            other.commit()
        return txn.scalar("SELECT v FROM t WHERE id = 1")

    try:
        assert result_of(db.run("conflict", body), clock) == 11
    finally:
        db.pool.close()
        other.close()
    assert len(attempts) == 2
    assert cluster.sql(3, "SET SESSION wsrep_sync_wait = 1; SELECT v FROM dtx_gal_conflict.t") == [["11"]]


def test_a_commit_whose_acknowledgement_was_lost_is_found_through_another_node(cluster: galera.Cluster):
    """A transaction commits through node 1 and the connection dies before the acknowledgement
    arrives; that node is then passed over (it failed lately), so the retry's lookup of the
    transaction's id runs on another node. The read is causal: it finds the id, and the result of
    the committed attempt is returned without running the body again. Then the connection is lost
    before COMMIT: the lookup through a third node finds nothing and the body runs again there."""
    from support.lost_commits import faulty_db, settle

    url = fresh(cluster, "dtx_gal_lost")
    clock = task.Clock()
    db, faults = faulty_db(url, clock)
    engine = db.engine
    lost = faults.lost
    ports: list[int] = []

    def lost_with_its_node():
        engine._mark_failed("127.0.0.1", ports[-1])  # the node of the connection that died
        return lost()

    faults.lost = lost_with_its_node

    def add(txn: Txn) -> int:
        ports.append(int(txn.scalar("SELECT @@port")))
        txn.execute("INSERT INTO tokens (token_hash, farmer_id, address, created) VALUES (?, 'f', 'a', 0)",
                    (os.urandom(32),))
        return ports[-1]

    try:
        faults.arm("after")
        committed_on = settle(db.run("add", add), clock)
        assert ports == [committed_on]
        looked_up_on = run_sync(db, "SELECT @@port")  # the lookup's connection
        assert looked_up_on != committed_on
        faults.arm("before")
        port = settle(db.run("add", add), clock)
        assert ports[1:] == [looked_up_on, port] and len({committed_on, looked_up_on, port}) == 3
        assert db.lost_commits == {"committed": 1, "rolled_back": 1, "unknown": 0}
    finally:
        db.pool.close()
    assert cluster.sql(3, "SET SESSION wsrep_sync_wait = 1; SELECT COUNT(*) FROM dtx_gal_lost.tokens") == [["2"]]


def run_sync(db: Database, sql: str):
    return result_of(db.run("read", lambda txn: txn.scalar(sql)), db.clock)


def test_sessions_read_causally(cluster: galera.Cluster):
    """Every connection the engine opens to a Galera node waits for the cluster before it reads
    (the READ bit of wsrep_sync_wait), keeping any bits the server sets."""
    cluster.sql(2, "SET GLOBAL wsrep_sync_wait = 4")
    try:
        for index in (1, 2):
            conn = create_engine(cluster.url(index)).connect()
            try:
                with conn.cursor() as cursor:
                    cursor.execute("SELECT @@session.wsrep_sync_wait")
                    assert cursor.fetchone()[0] == (1 if index == 1 else 5)
            finally:
                conn.close()
    finally:
        cluster.sql(2, "SET GLOBAL wsrep_sync_wait = 0")


class _Reactor:
    """Enough of a reactor to build an adbapi pool whose interactions the test runs itself."""

    def callWhenRunning(self, *args, **kwargs):
        return None


def test_node_outside_the_primary_component_is_left_for_another(cluster: galera.Cluster):
    """Node 3 isolated (``gmcast.isolate``) is a node that lost the cluster: it still accepts
    connections but answers 1047. The pool's connection to it is dropped after the error, and the
    next connection skips it for the next server of the URL."""
    fresh(cluster, "dtx_gal_ready")
    cluster.sql(1, "CREATE TABLE dtx_gal_ready.t (id INT PRIMARY KEY) ENGINE=InnoDB; "
                   "INSERT INTO dtx_gal_ready.t VALUES (1)")
    hosts = [cluster.nodes[2], cluster.nodes[0]]
    url = f"mysql://{cluster.user}:{cluster.password}@" + ",".join(f"127.0.0.1:{n.port}" for n in hosts) \
        + "/dtx_gal_ready"
    engine = create_engine(url)
    db = Database.connect(engine, _Reactor(), pool_size=1)
    pool = db.pool

    def where(txn: Txn) -> int:
        txn.execute("SELECT COUNT(*) FROM t").fetchone()
        return int(txn.scalar("SELECT @@port"))

    try:
        assert pool._runInteraction(db._body, where, (), {}) == hosts[0].port  # the first server
        cluster.sql(3, "SET GLOBAL wsrep_provider_options = 'gmcast.isolate=1'")
        cluster.wait_synced([1, 2])
        wait_until(lambda: cluster.status(3).get("wsrep_cluster_status") != "Primary", 60, "node 3 out of the cluster")
        with pytest.raises(Exception) as raised:
            pool._runInteraction(db._body, where, (), {})
        assert raised.value.args[0] == 1047, raised.value
        assert engine.is_transient(raised.value) and engine.drops_connection(raised.value)
        assert pool.connections == {}  # dropped, quietly
        assert pool._runInteraction(db._body, where, (), {}) == hosts[1].port  # the next ready server
    finally:
        pool.close() if pool.running else None
        for conn in list(pool.connections.values()):
            conn.close()
        cluster.sql(3, "SET GLOBAL wsrep_provider_options = 'gmcast.isolate=0'")
        cluster.wait_synced()


class Prober(threading.Thread):
    """GETs ``url`` every 0.1 s and records (monotonic time, status)."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url = url
        self.results: list[tuple[float, int]] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            started = time.monotonic()
            try:
                code = http_get(self.url, timeout=30)[0]
            except OSError:
                code = -1
            self.results.append((started, code))
            time.sleep(0.1)

    def stop(self) -> None:
        self.stopping.set()
        self.join(40)


def test_instances_on_three_nodes_survive_a_node_kill(cluster: galera.Cluster, tmp_path: Path):
    """Three instances, instance i on node i first (its URL lists every node, its own first), and a
    fourth whose URL names node 1 only; v0 and v1 farmers on the three. Node 1 is killed (SIGKILL)
    under load, then started again."""
    url = fresh(cluster, "dtx_gal_e2e")
    own_first = [f"mysql://{cluster.user}:{cluster.password}@"
                 + ",".join(f"127.0.0.1:{cluster.nodes[(i + k) % 3].port}" for k in range(3)) + "/dtx_gal_e2e"
                 for i in range(3)]
    only_node1 = cluster.url(1, "dtx_gal_e2e")
    chunk = tmp_path / "chunk.bin"
    chunk.write_bytes(os.urandom(32 * 1024))
    # every instance serves the same stored chunks: one chunk directory (a shared file system
    # across machines, docs/operations.md)
    chunks = ["--chunk-dir", str(tmp_path / "chunks")]
    done = subprocess.run(ADMIN + ["--data-dir", str(tmp_path / "admin"), "--db", url, *chunks, "file", "add",
                                   str(chunk), "--redundancy", "6", "--interval", str(INTERVAL)],
                          env=daemon_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    common = [*chunks, "--tick", "0.5", "--seeded-interval", str(INTERVAL), "--seeded-pool", "4096:4",
              "--seeded-challenges", "64", "--token-rate", "0", "--max-tokens-per-ip", "0",
              "--challenge-batch", "40", "--challenge-low-water", "10", "--max-failures", "2"]
    instances = []
    try:
        for i, db in enumerate([*own_first, only_node1]):
            instances.append(Daemon(tmp_path / f"node{i}", ["--data-dir", str(tmp_path / f"data{i}"), "--db", db]
                                    + common).start())
        v0 = [V0Farmer(f"v0-{i}", instances[i].url, make_address(50 + i), files=1) for i in range(3)]
        v1 = []
        for i in (0, 1):
            (tmp_path / f"v1-{i}").mkdir()
            v1.append(V1Farmer(f"v1-{i}", instances[i].url, make_address(60 + i), str(tmp_path / f"v1-{i}"),
                               2 * 4096))
        farmers = [*v0, *v1]
        probe_failover = Prober(f"{instances[0].url}/api/downstream/due/")
        probe_single = Prober(f"{instances[3].url}/health")
        for f in farmers:
            f.start()
        try:
            wait_until(lambda: all(f.passes >= 1 for f in v0) and all(f.heartbeats >= 2 for f in v1), 60, "farming")
        except AssertionError:
            raise AssertionError(f"{[(f.name, f.passes, dict(f.statuses), dict(f.errors)) for f in v0]} "
                                 f"{[(f.name, f.heartbeats, dict(f.errors)) for f in v1]} "
                                 f"{instances[0].log()[-4000:]}") from None
        probe_failover.url += v0[0].token
        probe_failover.start()
        probe_single.start()
        before = {f.name: f.passes for f in v0} | {f.name: f.heartbeats for f in v1}

        cluster.kill_node(1)
        killed_at = time.monotonic()
        # the instances on node 1 first: the farmers keep farming (through node 2), the single-node
        # instance says 503
        wait_until(lambda: v0[0].passes >= before["v0-0"] + 1 and v1[0].heartbeats >= before["v1-0"] + 2,
                   60, "farming through instance 0 after its node died")
        wait_until(lambda: any(t >= killed_at and c == 503 for t, c in probe_single.results), 30,
                   "503 from the instance on node 1 only")
        cluster.start_node(1)
        back_at = time.monotonic()
        wait_until(lambda: any(t >= back_at and c == 200 for t, c in probe_single.results), 30,
                   "the single-node instance back with its node")
        wait_until(lambda: all(f.passes >= before[f.name] + 2 for f in v0)
                   and all(f.heartbeats >= before[f.name] + 4 for f in v1), 60, "farming after the restart")
        assert all(d.proc.poll() is None for d in instances), "an instance died"
    finally:
        for f in locals().get("farmers", []):
            f.stop()
        for p in (locals().get("probe_failover"), locals().get("probe_single")):
            if p is not None and p.is_alive():
                p.stop()
        statuses = [d.stop() for d in instances]
    assert statuses == [0] * len(instances), [d.log()[-3000:] for d in instances]

    after_kill = sorted({c for t, c in probe_failover.results if t >= killed_at})
    single = sorted({c for t, c in probe_single.results if t >= killed_at})
    print(f"\ngalera node kill: instance 0 (fails over) answered {after_kill}, the node-1-only instance "
          f"{single}; farmer errors {[dict(f.errors) for f in farmers]} statuses {[dict(f.statuses) for f in v0]}")
    assert set(after_kill) <= {200, 503} and 200 in after_kill
    assert set(single) <= {200, 503}
    assert all(500 not in f.statuses for f in v0)
    # nothing acknowledged is lost: read through node 2 and through the restarted node 1
    for node in (2, 1):
        db = DbView(cluster.url(node, "dtx_gal_e2e"))
        recorded = db.passes_by_token_file()
        for f in v0:
            token_hash = hashlib.sha256(bytes.fromhex(f.token)).digest()
            for file_hash, acked in f.acked.items():
                assert acked <= recorded[(token_hash, file_hash)] <= acked + 1, (node, f.name, file_hash)
        for f in v1:
            assert f.heartbeats <= db.hbcount(f.token) <= f.heartbeats + 2, (node, f.name)
        assert db.consistency_problems() == []
    # no v0 farmer failed (a challenge whose deadline fell in the few seconds the surviving nodes
    # took to evict the dead one may count one miss: the farmer's answer and the timer pass both
    # waited for the cluster, and whichever committed first decided)
    misses = db.query("SELECT COUNT(*), SUM(misses) FROM contracts WHERE protocol = 0 AND misses > 0")[0]
    print(f"v0 contracts with a miss: {misses[0]} ({misses[1] or 0} misses)")
    assert db.query("SELECT COUNT(*) FROM contracts WHERE protocol = 0 AND state = 'failed'") == [(0,)]
    for d in instances:
        assert "Unhandled error" not in d.log()


def test_the_galera_bench_runs(cluster: galera.Cluster):
    """bench/galera_instances.py once at a tiny size, so it cannot rot (no figure is asserted)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOWNSTREAM_")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    done = subprocess.run([sys.executable, "bench/galera_instances.py", "--cluster", cluster.base, "--instances", "2",
                           "--farmers", "2", "--contracts", "4", "--processes", "1", "--duration", "1",
                           "--warmup", "0.5", "--challenges", "8"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "proofs/s" in done.stdout and "daemon CPU per proof" in done.stdout, done.stdout
