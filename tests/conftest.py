
import pytest
from twisted.internet import task

from support import MYSQL_SKIP_REASON, MYSQL_URL, fresh_mysql_database, make_config, make_node


def pytest_report_header(config):
    if MYSQL_URL:
        return [f"MySQL tests: required, against {MYSQL_URL.split('@')[-1]}"]
    return [f"MySQL tests: SKIPPED ({MYSQL_SKIP_REASON})"]


@pytest.fixture(params=["sqlite", pytest.param("mysql", marks=pytest.mark.mysql)])
def db_url(request, tmp_path):
    """A fresh, empty database on each engine."""
    if request.param == "sqlite":
        return "sqlite:///" + str(tmp_path / "data" / "downstream.db")
    if not MYSQL_URL:
        pytest.skip(MYSQL_SKIP_REASON)
    fresh_mysql_database(MYSQL_URL)
    return MYSQL_URL


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
