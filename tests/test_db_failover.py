"""Several servers in one MySQL URL (the nodes of a Galera cluster): parsing, the order servers are
tried in, a node that is not ready, and a connection dropped quietly after it was lost. The
cluster itself is in tests/test_galera.py."""

from __future__ import annotations

import socket

import pymysql
import pytest

from downstream_tx.config import load_config
from downstream_tx.db.database import Database
from downstream_tx.db.engine import MysqlEngine, create_engine
from downstream_tx.db.url import InvalidDbUrl, mask_db_url, parse_db_url, with_password
from support import MYSQL_SKIP_REASON, MYSQL_URL


def test_a_url_may_list_several_servers():
    url = parse_db_url("mysql://node:pw@db1:3307,DB2,[::1]:3309/downstream")
    assert url.hosts == (("db1", 3307), ("db2", 3306), ("::1", 3309))
    assert (url.host, url.port, url.user, url.password, url.database) == ("db1", 3307, "node", "pw", "downstream")
    assert parse_db_url("mysql://node:pw@db1:3307/downstream").hosts == (("db1", 3307),)
    assert parse_db_url("mysql://node@db1/downstream").hosts == (("db1", 3306),)
    engine = create_engine("mysql://node:pw@db1:3307,db2,[::1]:3309/downstream")
    assert engine.describe() == "mysql://node:***@db1:3307,db2:3306,[::1]:3309/downstream"
    assert mask_db_url("mysql://node:pw@db1,db2/x") == "mysql://node:***@db1,db2/x"
    assert with_password("mysql://node@db1:1,db2:2/x", "p@ss") == "mysql://node:p%40ss@db1:1,db2:2/x"
    config = load_config(None, {"DOWNSTREAM_DB": "mysql://node:pw@db1:3307,db2:3308/downstream"})
    assert parse_db_url(config.db_url).hosts == (("db1", 3307), ("db2", 3308))


@pytest.mark.parametrize("url, message", [
    ("mysql://u:p@db1:x,db2/d", "the port is not a number"),
    ("mysql://u:p@db1:0,db2/d", "the port is not a number"),
    ("mysql://u:p@db1,,db2/d", "is empty"),
    ("mysql://u:p@db1,db1:3306/d", "appears twice"),
    ("mysql://u:p@[::1,db2/d", "IPv6"),
    ("mysql://u:p@db1,db2/", "needs a database name"),
])
def test_a_bad_server_list_is_refused(url, message):
    with pytest.raises(InvalidDbUrl, match=message.replace("(", r"\(")):
        parse_db_url(url)


class FakeCursor:
    def __init__(self, conn):
        self.conn = conn
        self.rows = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def execute(self, sql, args=None):
        self.conn.statements.append(sql)
        if sql.startswith("SHOW VARIABLES"):
            self.rows = [("wsrep_on", "ON" if self.conn.galera else "OFF")]
        elif sql.startswith("SHOW STATUS"):
            self.rows = [("wsrep_ready", self.conn.ready), ("wsrep_cluster_status", "Primary")]

    def fetchone(self):
        return self.rows[0] if self.rows else None

    def fetchall(self):
        return self.rows


class FakeConnection:
    def __init__(self, host, port, galera, ready):
        self.host, self.port, self.galera, self.ready = host, port, galera, ready
        self.statements: list[str] = []
        self.closed = False

    def cursor(self):
        return FakeCursor(self)

    def close(self):
        self.closed = True


class FakeDriver:
    """pymysql's ``connect`` and errors; servers are refused, not ready, or fine."""

    err = pymysql.err

    def __init__(self, servers: dict[int, str]):
        self.servers = servers  # port → "down" | "not ready" | "galera" | "mysql"
        self.tried: list[int] = []
        self.made: list[FakeConnection] = []

    def connect(self, host, port, **kwargs):
        self.tried.append(port)
        state = self.servers[port]
        if state == "down":
            raise pymysql.err.OperationalError(2003, f"Can't connect to MySQL server on '{host}' (111)")
        conn = FakeConnection(host, port, state != "mysql", "OFF" if state == "not ready" else "ON")
        self.made.append(conn)
        return conn


def fake_engine(servers: dict[int, str]) -> tuple[MysqlEngine, FakeDriver]:
    engine = create_engine("mysql://u:p@" + ",".join(f"127.0.0.1:{p}" for p in servers) + "/d")
    driver = FakeDriver(servers)
    engine.module = driver
    return engine, driver


def test_the_first_server_that_answers_and_is_ready_is_used():
    engine, driver = fake_engine({1: "down", 2: "not ready", 3: "galera"})
    conn = engine.open_connection(user="u")
    assert (conn.port, driver.tried) == (3, [1, 2, 3])
    assert driver.made[0].closed  # the node that was not ready
    # a Galera session reads causally
    assert "SET SESSION wsrep_sync_wait = @@global.wsrep_sync_wait | 1" in conn.statements
    # servers that failed lately are tried last, longest-failed first
    assert engine.host_order() == [("127.0.0.1", 3), ("127.0.0.1", 1), ("127.0.0.1", 2)]
    driver.servers[1] = "galera"
    driver.tried.clear()
    assert engine.open_connection(user="u").port == 3 and driver.tried == [3]
    # once the memory of the failure is old, the URL's order again
    engine.FAILED_HOST_SECONDS = 0
    assert engine.open_connection(user="u").port == 1


def test_plain_mysql_needs_no_galera_set_up():
    engine, driver = fake_engine({1: "mysql"})
    conn = engine.open_connection(user="u")
    assert conn.statements == ["SHOW VARIABLES LIKE 'wsrep_on'"]


def test_no_server_ready_is_an_error_the_node_retries_and_reports_as_unavailable():
    engine, _ = fake_engine({1: "down", 2: "down"})
    with pytest.raises(pymysql.err.OperationalError) as raised:
        engine.open_connection(user="u")
    assert raised.value.args[0] == 2003 and engine.is_connection_error(raised.value)
    engine, _ = fake_engine({1: "not ready", 2: "down"})
    engine.FAILED_HOST_SECONDS = 0  # keep the URL's order
    with pytest.raises(pymysql.err.OperationalError) as raised:
        engine.open_connection(user="u")
    assert raised.value.args[0] == 2003
    engine, _ = fake_engine({1: "down", 2: "not ready"})
    engine.FAILED_HOST_SECONDS = 0
    with pytest.raises(pymysql.err.OperationalError) as raised:
        engine.open_connection(user="u")
    assert raised.value.args[0] == 1047 and engine.is_transient(raised.value)


def test_galera_errors_are_transient():
    engine = create_engine("mysql://u:p@h1,h2/d")
    deadlock = pymysql.err.OperationalError(1213, "Deadlock found when trying to get lock; try restarting transaction")
    not_ready = pymysql.err.OperationalError(1047, "WSREP has not yet prepared node for application use")
    assert engine.is_transient(deadlock) and not engine.drops_connection(deadlock)
    assert engine.is_transient(not_ready) and engine.drops_connection(not_ready)
    assert not engine.is_transient(pymysql.err.IntegrityError(1062, "Duplicate entry"))


class _Reactor:
    """Enough of a reactor to build an adbapi pool whose interactions the test runs itself."""

    def callWhenRunning(self, *args, **kwargs):
        return None


@pytest.mark.mysql
def test_a_lost_connection_is_dropped_quietly_and_the_next_goes_to_a_live_server(caplog):
    """The first server of the URL refuses (a dead node); the connection to the live one is killed
    by the server: the transaction fails with a lost connection, the pool closes it without a
    rollback attempt (no 'Rollback failed'), and the next transaction connects again."""
    if not MYSQL_URL:
        pytest.skip(MYSQL_SKIP_REASON)
    from twisted.logger import globalLogPublisher

    real = parse_db_url(MYSQL_URL)
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
    url = (f"mysql://{real.user}:{real.password}@127.0.0.1:{dead.getsockname()[1]},{real.host}:{real.port}"
           f"/{real.database}")
    engine = create_engine(url)
    db = Database.connect(engine, _Reactor(), pool_size=1)
    pool = db.pool
    logged: list[dict] = []
    globalLogPublisher.addObserver(logged.append)
    try:
        first = pool._runInteraction(db._body, lambda txn: txn.scalar("SELECT CONNECTION_ID()"), (), {})
        admin = create_engine(MYSQL_URL).connect()
        try:
            with admin.cursor() as cursor:
                cursor.execute(f"KILL {int(first)}")
        finally:
            admin.close()
        with pytest.raises(Exception) as raised:
            pool._runInteraction(db._body, lambda txn: txn.scalar("SELECT 1"), (), {})
        assert engine.drops_connection(raised.value), raised.value
        assert pool.connections == {}
        second = pool._runInteraction(db._body, lambda txn: txn.scalar("SELECT CONNECTION_ID()"), (), {})
        assert second != first
    finally:
        globalLogPublisher.removeObserver(logged.append)
        for conn in list(pool.connections.values()):
            conn.close()
        dead.close()
    assert not [e for e in logged if "Rollback failed" in str(e.get("log_format", "")) + str(e.get("why", ""))]


def test_no_statement_depends_on_what_galera_does_not_replicate():
    """Galera replicates row changes of InnoDB tables only: no table or named locks, no other
    engine, no temporary tables anywhere in the node's SQL (the schema's tables are checked on a
    real cluster in tests/test_galera.py)."""
    import re
    from pathlib import Path

    package = Path(__file__).resolve().parent.parent / "downstream_tx"
    forbidden = re.compile(r"LOCK\s+TABLES?|GET_LOCK|RELEASE_LOCK|IS_FREE_LOCK|TEMPORARY\s+TABLE|"
                           r"LOCK\s+IN\s+SHARE\s+MODE|FOR\s+SHARE|(?-i:ENGINE\s*=\s*(?!InnoDB)\w+)", re.I)
    found = []
    for path in [*package.rglob("*.py"), *package.rglob("*.sql")]:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if forbidden.search(line):
                found.append(f"{path.relative_to(package)}:{n}: {line.strip()}")
    assert found == []
    for path in package.glob("db/schema/*.mysql.sql"):
        text = path.read_text()
        assert text.count("CREATE TABLE") == text.count("ENGINE=InnoDB"), path.name
