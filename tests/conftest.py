import os

import pytest
from twisted.internet import task
from twisted.logger import globalLogPublisher

from support import (
    MYSQL_ENV,
    MYSQL_SKIP_REASON,
    MYSQL_URL,
    StubClient,
    fresh_mysql_database,
    make_config,
    make_node,
    make_resource,
    run,
    upgraded_mysql_database,
)
from support.databases import TEMPLATES
from support.v1 import build, make_seeded_node

MYSQL_DESELECTED = pytest.StashKey[int]()
#: the directory of a running Spider cluster (contrib/spider/cluster.sh): every schema the node
#: creates in this process is sharded over it (DOWNSTREAM_TEST_MYSQL_URL names its head)
SPIDER_ENV = "DOWNSTREAM_TEST_SPIDER"
if os.environ.get(SPIDER_ENV):
    from support import spider

    spider.shard_node_schema(os.environ[SPIDER_ENV])


def pytest_report_header(config):
    if MYSQL_URL:
        spider_dir = os.environ.get(SPIDER_ENV)
        through = f", schemas sharded over the Spider cluster {spider_dir}" if spider_dir else ""
        return [f"MySQL tests: required, against {MYSQL_URL.split('@')[-1]}{through}"]
    return [f"MySQL tests: SKIPPED ({MYSQL_SKIP_REASON})"]


def pytest_collection_modifyitems(config, items):
    """Without a MySQL URL, every ``mysql``-marked test is deselected and counted in ONE summary
    line (``pytest_terminal_summary``), instead of one identical skip line per test."""
    if MYSQL_URL:
        return
    mysql = [item for item in items if item.get_closest_marker("mysql") is not None]
    if mysql:
        items[:] = [item for item in items if item.get_closest_marker("mysql") is None]
        config.hook.pytest_deselected(items=mysql)
        config.stash[MYSQL_DESELECTED] = len(mysql)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    count = config.stash.get(MYSQL_DESELECTED, 0)
    if count:
        terminalreporter.write_line(f"SKIPPED {count} MySQL/MariaDB tests (deselected): set {MYSQL_ENV}="
                                    "mysql://user:password@host:port/dbname to run them (CI does)")


@pytest.fixture(scope="session", autouse=True)
def db_templates(tmp_path_factory):
    """The directory of the session's SQLite template database (support/databases.py)."""
    TEMPLATES.directory = str(tmp_path_factory.mktemp("db-templates"))
    yield
    TEMPLATES.directory = TEMPLATES.built = None


ENGINES = ["sqlite", pytest.param("mysql", marks=pytest.mark.mysql)]


def _test_database(request, tmp_path, mysql) -> str:
    if request.param == "sqlite":
        return "sqlite:///" + str(tmp_path / "data" / "downstream.db")
    if not MYSQL_URL:
        pytest.skip(MYSQL_SKIP_REASON)
    mysql(MYSQL_URL)
    return MYSQL_URL


@pytest.fixture(params=ENGINES)
def db_url(request, tmp_path):
    """A database on each engine exactly as a fresh schema upgrade leaves it: on SQLite a file not
    made yet (``open_test_db`` makes it a copy of the session's upgraded template), on MySQL the
    test database emptied back to the upgrade's state (support/databases.py)."""
    return _test_database(request, tmp_path, upgraded_mysql_database)


@pytest.fixture(params=ENGINES)
def empty_db_url(request, tmp_path):
    """An empty database on each engine, no schema: a SQLite file not made yet, the MySQL test
    database dropped and re-created (for the tests that build a schema themselves)."""
    return _test_database(request, tmp_path, fresh_mysql_database)


@pytest.fixture
def clock():
    c = task.Clock()
    c.advance(1_700_000_000)
    return c


@pytest.fixture
def config(tmp_path, db_url):
    return make_config(tmp_path, db_url)


@pytest.fixture
def node(config, clock):
    n = make_node(config, clock)
    yield n
    n.db.close()


def _node_factory(tmp_path, db_url, clock):
    made = []

    def factory(**overrides):
        node = make_node(make_config(tmp_path, db_url, **overrides), clock)
        made.append(node)
        return node

    yield factory
    for node in made:
        node.db.close()


@pytest.fixture
def nodes(tmp_path, db_url, clock):
    """A factory of nodes over the test's database (``support.make_config`` with the overrides
    given), closed after the test."""
    yield from _node_factory(tmp_path, db_url, clock)


@pytest.fixture
def make_v0_api(tmp_path, db_url, clock):
    """``make_v0_api(**config_overrides) -> (node, client)``: a node and a StubTreq client of its
    HTTP API; every node shares this test's database (as node processes share one)."""
    nodes = []

    def make(**overrides):
        config = make_config(tmp_path, db_url, **overrides)
        node = make_node(config, clock)
        nodes.append(node)
        return node, StubClient(make_resource(node, config))

    yield make
    for node in nodes:
        node.db.close()


@pytest.fixture
def seeded_nodes(tmp_path, db_url, clock):
    """A factory of nodes with a small seeded pool filled (``support.v1.make_seeded_node``; ``sub``:
    a node of its own database and node secret), closed after the test."""
    made = []

    def factory(sub: str = "", **overrides):
        node = make_seeded_node(tmp_path, db_url, clock, sub or None, **overrides)
        made.append(node)
        return node

    yield factory
    for node in made:
        node.db.close()


@pytest.fixture
def v1_node_api(tmp_path, db_url, clock):
    """A v1 node (its seeded pool filled, no per-IP token limit) and its StubTreq API
    (``support.v1.build``), closed after the test."""
    node, api = build(tmp_path, db_url, clock, max_tokens_per_ip=0)
    run(node.pool.refill())
    yield node, api
    node.db.close()


@pytest.fixture(params=ENGINES)
def daemon_db(request):
    """The ``--db`` arguments of an end-to-end daemon: none (SQLite in its data directory), or the
    test MySQL/MariaDB database, dropped and re-created."""
    if request.param == "sqlite":
        return []
    if not MYSQL_URL:
        pytest.skip(MYSQL_SKIP_REASON)
    fresh_mysql_database(MYSQL_URL)
    return ["--db", MYSQL_URL]


@pytest.fixture
def sqlite_nodes(tmp_path, clock):
    """:func:`nodes` on SQLite only (for the tests whose subject is not the engine)."""
    yield from _node_factory(tmp_path, None, clock)


@pytest.fixture
def logged():
    """The log events emitted during the test (``twisted.logger``'s global publisher)."""
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)
