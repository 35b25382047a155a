"""What a test's database costs to set up (tests/support/databases.py, docs/testing.md): building
it from nothing (MySQL: DROP + CREATE DATABASE, then every schema step; SQLite: every step on a new
file) against handing out the session's upgraded one again (MySQL: the structure compared, tables
checksummed, the changed ones emptied and refilled, AUTO_INCREMENTs set back; SQLite: a copy of the
template file), after a test that wrote nothing and after one that wrote a node's worth of rows.

Usage: DOWNSTREAM_TEST_MYSQL_URL=mysql://user:pw@host:port/db python bench/db_setup.py [--rounds 10] [--quick]
(without the URL, SQLite only; the MySQL database named is dropped and re-created)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from support import (  # noqa: E402
    ADDRESS,
    StubClient,
    add_test_file,
    fresh_mysql_database,
    make_config,
    make_node,
    make_resource,
    new_token,
    open_database,
)
from support.databases import TEMPLATES, upgraded_mysql_database  # noqa: E402


def timed(fn, rounds: int, before=None) -> list[float]:
    out = []
    for _ in range(rounds):
        if before is not None:
            before()
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def show(label: str, times: list[float]) -> None:
    print(f"  {label:58s} median {statistics.median(times) * 1000:8.1f} ms   min {min(times) * 1000:8.1f} ms")


def a_test_that_writes(url: str, tmp: Path) -> None:
    """What a typical API test leaves: a node (its secret), a stored file and its challenges, a
    token, a contract (rows in about ten tables, several AUTO_INCREMENTs moved)."""
    config = make_config(tmp, url)
    node = make_node(config)
    try:
        add_test_file(node, tmp, redundancy=2)
        client = StubClient(make_resource(node, config))
        token = new_token(client, ADDRESS)
        assert client.get(f"/api/downstream/chunk/{token}").code == 200
    finally:
        node.db.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="3 rounds")
    args = parser.parse_args()
    rounds = 3 if args.quick else args.rounds
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}; {rounds} rounds each")
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        TEMPLATES.directory = str(base / "templates")
        os.mkdir(TEMPLATES.directory)
        counter = iter(range(10**6))

        def sqlite_path() -> str:
            return str(base / f"s{next(counter)}" / "node.db")

        print("SQLite, a test's database:")
        show("every step on a new file", timed(lambda: open_database("sqlite:///" + sqlite_path(),
                                                                       template=False).close(), rounds))
        open_database("sqlite:///" + sqlite_path()).close()  # the template, built once
        show("a copy of the session's template", timed(lambda: open_database("sqlite:///" + sqlite_path()).close(),
                                                         rounds))
        url = os.environ.get("DOWNSTREAM_TEST_MYSQL_URL")
        if not url:
            print("MySQL: skipped (DOWNSTREAM_TEST_MYSQL_URL is not set)")
            return 0
        print("MySQL/MariaDB, a test's database:")

        def fresh() -> None:
            fresh_mysql_database(url)
            open_database(url).close()

        show("DROP + CREATE DATABASE, every step (before)", timed(fresh, rounds))
        upgraded_mysql_database(url)  # built once
        show("handed out again after a test that wrote nothing", timed(lambda: upgraded_mysql_database(url), rounds))
        show("handed out again after a test that wrote rows",
             timed(lambda: upgraded_mysql_database(url), rounds,
                   before=lambda: a_test_that_writes(url, base / f"w{next(counter)}")))
        fresh_mysql_database(url)
        show("rebuilt after a test that dropped it",
             timed(lambda: upgraded_mysql_database(url), rounds, before=lambda: fresh_mysql_database(url)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
