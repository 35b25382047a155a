"""A throw-away MariaDB Spider cluster on loopback ports: one Spider head, two backend servers.

Used by the Spider tests (tests/test_spider.py), the Spider runs of the suite and the benchmarks
(docs/capacity.md, "Write sharding: MariaDB Spider"), through ``contrib/spider/cluster.sh`` or
``python3 tests/support/spider.py``::

    cluster.sh start DIR [--backends 2] [--database dtx_spider] [--user dtx] [--password dtx-test]
    cluster.sh shard DIR DATABASE   # the node's schema on DATABASE, its tables moved to the backends
    cluster.sh status DIR           # each server: running, its port, its Spider tables
    cluster.sh stop DIR             # every server, cleanly (SIGTERM, then SIGKILL after a timeout)

Everything lives under DIR: one directory per server (``head/``, ``b1/``, ``b2/``: ``my.cnf``,
``data/``, ``mysqld.sock``, ``error.log``) and ``cluster.json`` (ports, pids, the head's URL). The
ports are free loopback ports chosen at run time. The head loads ``ha_spider.so`` (Debian's
``mariadb-plugin-spider``) and knows each backend as a server (``CREATE SERVER b1 …``); the node
connects to the head only. The backends are plain MariaDB servers holding InnoDB tables.

Spider does not forward DDL: a table on the head is a Spider table whose rows live in a table of the
same name on a backend (or, partitioned, on several), and that table must be created there first.
:func:`shard` therefore runs the node's own schema steps on the head (ordinary InnoDB tables, as on
one MariaDB), copies each table's definition to the backends, then turns the head's table into a
Spider table (``ALTER TABLE … ENGINE=SPIDER``): the tables that grow per farmer are partitioned by
farmer across every backend (:data:`PARTITIONED`), the others live on backend 1.

The servers' handling (spawn, SQL as root, sessions, clean stop, nothing left running) is
tests/support/mariadb_local.py's, shared with the Galera cluster; like it this module is standard
library only, is started as root and runs each ``mariadbd`` as the ``mysql`` user.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:
    from . import mariadb_local as local
except ImportError:  # run as a script (standard library only: not through the test package)
    import mariadb_local as local  # type: ignore[no-redef]

#: what the tests and scripts use from here, as before the servers' code moved to mariadb_local.py
ClusterError, free_ports = local.ClusterError, local.free_ports
group_alive, leftovers = local.group_alive, local.leftovers

PLUGIN = "ha_spider.so"
PLUGIN_DIRS = ("/usr/lib/mysql/plugin", "/usr/lib/x86_64-linux-gnu/mariadb19/plugin")
PROGRAMS = ("mariadbd", "mariadb-install-db", "mariadb")
#: the account the head's Spider tables use on the backends
LINK_USER, LINK_PASSWORD = "spider", "spider-link"

#: the head's Spider settings unless ``head_options`` says otherwise: keep the connections to the
#: backends between transactions (the default, 0, connects to each backend afresh for every
#: transaction: ~2.7× the database CPU of a two-row transaction, docs/capacity.md)
HEAD_OPTIONS = {"spider_conn_recycle_mode": "1"}

#: per-farmer tables: partitioned by farmer across every backend. The head's table needs the
#: partitioning column in every unique key (MariaDB's rule for any partitioned table): ``key`` is
#: the head's primary key, ``unique`` the head's unique keys made plain indexes (each backend still
#: enforces them, but only among its own rows).
PARTITIONED: dict[str, dict] = {
    "contracts": {"by": "token_id", "key": "id, token_id"},
    "tokens": {"by": "id", "key": "id", "unique": ["token_hash"]},
    "contract_totals": {"by": "token_id", "key": "token_id"},
    "contract_tags": {"by": "contract_id", "key": "contract_id"},
    "addresses": {"by": "address", "key": "address"},
    "reputation": {"by": "address", "key": "address"},
}
#: tables left on the head as InnoDB (none by default: everything is on a backend)
LOCAL: set[str] = set()


def missing() -> str | None:
    """Why a Spider cluster cannot be started here (None: it can)."""
    if not any(os.path.exists(os.path.join(d, PLUGIN)) for d in PLUGIN_DIRS):
        return f"the Spider engine is not installed ({PLUGIN} missing: apt-get install mariadb-plugin-spider)"
    return local.missing_programs(PROGRAMS, "mariadb-server", "Spider")


@dataclass
class Server(local.LocalServer):
    name: str  # head, b1, b2…
    #: each server on its own loopback address: Spider's XA (``spider_internal_xa``) tells the
    #: members of a transaction apart by host only, so two backends on 127.0.0.1 collide there
    #: ("This xid member already exists")
    host: str = "127.0.0.1"


@dataclass
class Cluster(local.LocalServers):
    """A Spider head and its backends under ``base``; ``Cluster.load(base)`` re-reads one started earlier.
    Its servers are known by their names (``head``, ``b1``…)."""

    SERVER = Server
    SQL_TIMEOUT = 60.0

    base: str
    backends: int = 2
    database: str = "dtx_spider"
    user: str = "dtx"
    password: str = "dtx-test"
    #: Spider's own settings on the head (``spider_internal_xa`` …), written to its my.cnf
    head_options: dict[str, str] = field(default_factory=dict)
    servers: list[Server] = field(default_factory=list)

    # --- set-up ---------------------------------------------------------------------------------

    @property
    def head(self) -> Server:
        return self.servers[0]

    @property
    def backend_servers(self) -> list[Server]:
        return self.servers[1:]

    def server(self, name: str) -> Server:
        return next(s for s in self.servers if s.name == name)

    _server = server
    _missing = staticmethod(missing)

    def _plan(self) -> None:
        names = ["head"] + [f"b{i + 1}" for i in range(self.backends)]
        ports = free_ports(len(names))
        self.servers = [Server(os.path.join(self.base, n), p, n, f"127.0.0.{i + 1}")
                        for i, (n, p) in enumerate(zip(names, ports))]

    def _write_cnf(self, server: Server) -> None:
        extra = ""
        if server.name == "head":
            options = {**HEAD_OPTIONS, **self.head_options}
            extra = f"plugin-load-add={PLUGIN}\n" + "".join(f"{k}={v}\n" for k, v in options.items())
        text = server.mysqld_cnf(server.host) + extra
        Path(server.cnf).write_text(text)

    def _extra_json(self) -> dict[str, Any]:
        return {"url": self.url()}

    def url(self, database: str | None = None) -> str:
        """The node's database URL (on the head). ``database`` must start with the cluster's."""
        return f"mysql://{self.user}:{self.password}@127.0.0.1:{self.head.port}/{database or self.database}"

    # --- processes ------------------------------------------------------------------------------

    def _wait_engine(self, timeout: float) -> None:
        """The head answers before its Spider engine is ready (it sets itself up in the background:
        until then a Spider table is "Unknown storage engine 'SPIDER'")."""
        deadline = time.monotonic() + timeout
        while self.sql("head", "SELECT SUPPORT FROM information_schema.ENGINES WHERE ENGINE = 'SPIDER'") != [["YES"]]:
            if time.monotonic() > deadline:
                raise ClusterError(f"the head's Spider engine is not ready:\n{self.log_tail('head')}")
            time.sleep(0.2)

    def start(self, timeout: float = 120.0, stop_at_exit: bool = False) -> Cluster:
        """Create and start every server; the backends' link account, the head's servers and the
        node's database and user on the head. ``stop_at_exit``: as for the Galera cluster."""
        return super().start(timeout, stop_at_exit)

    def _boot(self, timeout: float) -> None:
        """Spawn every server; the backends' link account, the head's servers, the node's database and user."""
        for server in self.servers:
            self._spawn(server)
        for server in self.servers:
            self._wait_up(server.name, timeout)
        self._wait_engine(timeout)
        for b in self.backend_servers:
            self.sql(b.name, f"""
CREATE USER IF NOT EXISTS '{LINK_USER}'@'127.0.0.%' IDENTIFIED BY '{LINK_PASSWORD}';
GRANT ALL PRIVILEGES ON *.* TO '{LINK_USER}'@'127.0.0.%';
""")
            self.sql("head", f"CREATE OR REPLACE SERVER {b.name} FOREIGN DATA WRAPPER mysql OPTIONS "
                             f"(HOST '{b.host}', PORT {b.port}, USER '{LINK_USER}', "
                             f"PASSWORD '{LINK_PASSWORD}')")
        for host in ("127.0.0.1", "localhost"):
            self.sql("head", f"""
CREATE USER IF NOT EXISTS '{self.user}'@'{host}' IDENTIFIED BY '{self.password}';
GRANT ALL PRIVILEGES ON `{self.database}%`.* TO '{self.user}'@'{host}';
""")
        self.sql("head", f"CREATE DATABASE IF NOT EXISTS `{self.database}` CHARACTER SET utf8mb4 "
                         "COLLATE utf8mb4_bin")

    def kill_server(self, name: str) -> None:
        """SIGKILL server ``name`` (a crash)."""
        self._end(self.server(name), signal.SIGKILL, 10.0)

    def start_server(self, name: str, timeout: float = 120.0) -> None:
        """(Re)start a stopped or killed server; up on return."""
        if self.alive(name):
            raise ClusterError(f"{name} is running")
        self._spawn(self.server(name))
        self._wait_up(name, timeout)

    def stop(self, timeout: float = 60.0) -> None:
        """Stop every server, the head first (clean shutdown, nothing left running)."""
        super().stop(timeout)

    # --- the node's schema on Spider ------------------------------------------------------------

    def fresh(self, database: str) -> None:
        """Drop and re-create ``database`` on the head and on every backend (empty)."""
        for server in self.servers:
            self.sql(server.name, f"DROP DATABASE IF EXISTS `{database}`; CREATE DATABASE `{database}` "
                                  "CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")

    def shard(self, database: str, node_schema: bool = True) -> list[str]:
        """Move every InnoDB table of ``database`` on the head to the backends (see the module's
        text). ``node_schema``: first create the node's schema there (a fresh database). Returns the
        tables made Spider tables."""
        if node_schema:
            self.fresh(database)
            _node_schema(self.url(database))
        return shard_tables(self, database)

    def spider_tables(self, database: str) -> dict[str, str]:
        """Each table of ``database`` on the head and its engine."""
        rows = self.sql("head", "SELECT table_name, engine FROM information_schema.tables "
                                f"WHERE table_schema = '{database}'")
        return {r[0]: r[1] for r in rows}


def _node_schema(url: str) -> None:
    """The node's schema steps, run by the node's own code on the head."""
    code = f"""
import sys
sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
from downstream_tx.db import schema
from downstream_tx.db.database import Database
from downstream_tx.db.engine import create_engine
from twisted.internet import task
sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
from support import InlinePool, run
engine = create_engine({url!r})
db = Database(engine, InlinePool(engine), task.Clock(), backoff=0, record_outcomes=False)
run(db.run("schema", schema.upgrade_txn, schema.load_steps("mysql")))
"""
    venv = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "python"
    python = str(venv) if venv.exists() else sys.executable  # the node's dependencies
    done = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=300)
    if done.returncode:
        raise ClusterError(f"the node's schema steps failed on the head:\n{done.stderr[-3000:]}")


def shard_tables(cluster: Cluster, database: str, head=None) -> list[str]:
    """Turn the head's InnoDB tables of ``database`` into Spider tables over the backends.
    ``head(statement)``: runs one statement on the head and returns its rows (default: as root
    through the ``mariadb`` client; the suite's runs pass the node's own transaction)."""
    if head is None:
        def head(statement: str) -> list:
            return [[v.replace("\\n", "\n") for v in row] for row in cluster.sql("head", statement)]
    tables = [t for t, engine in head("SELECT table_name, engine FROM information_schema.tables "
                                      f"WHERE table_schema = '{database}'")
              if engine == "InnoDB" and t not in LOCAL]
    backends = [b.name for b in cluster.backend_servers]
    # no foreign key survives: a Spider table has none, and a backend's table may reference rows on
    # another backend (the node's schema declares them on its v0 tables, step 1)
    for table, name in head("SELECT table_name, constraint_name FROM information_schema.referential_constraints "
                            f"WHERE constraint_schema = '{database}'"):
        head(f"ALTER TABLE `{database}`.`{table}` DROP FOREIGN KEY `{name}`")
    for table in tables:
        create = head(f"SHOW CREATE TABLE `{database}`.`{table}`")[0][1]
        for b in backends if table in PARTITIONED else backends[:1]:
            cluster.sql(b, f"CREATE DATABASE IF NOT EXISTS `{database}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin; "
                           f"USE `{database}`; DROP TABLE IF EXISTS `{table}`; {create}")
        link = f'wrapper "mysql", table "{table}", database "{database}"'
        spec = PARTITIONED.get(table)
        if spec is None:
            alter = f"ENGINE=SPIDER COMMENT='{link}, srv \"{backends[0]}\"'"
        else:
            parts = ", ".join(f"PARTITION p{i + 1} COMMENT = 'srv \"{b}\"'" for i, b in enumerate(backends))
            changes = [f"DROP INDEX `{u}`, ADD INDEX `{u}` (`{u}`)" for u in spec.get("unique", [])]
            changes.append(f"DROP PRIMARY KEY, ADD PRIMARY KEY ({spec['key']})")
            alter = (", ".join(changes) + f", ENGINE=SPIDER COMMENT='{link}' "
                     f"PARTITION BY KEY ({spec['by']}) ({parts})")
        # ALTER TABLE … ENGINE=SPIDER keeps none of the table's rows (they are not copied to the
        # backends): the rows (the schema's seed rows: schema_version, leases, vetting) are copied after
        t = f"`{database}`.`{table}`"
        kept = f"`{database}`.`{table}__local`"
        for statement in (f"RENAME TABLE {t} TO {kept}", f"CREATE TABLE {t} LIKE {kept}", f"ALTER TABLE {t} {alter}",
                          f"INSERT INTO {t} SELECT * FROM {kept}", f"DROP TABLE {kept}"):
            head(statement)
    return tables


def shard_node_schema(base: str) -> None:
    """Make every schema upgrade the node runs in this process (``schema.upgrade_txn``) shard the
    tables it created over the Spider cluster under ``base`` (``DOWNSTREAM_TEST_SPIDER``: the suite
    run through Spider, docs/capacity.md). The tables are converted in the upgrade's own
    transaction (its DDL commits it), on the connection that holds them."""
    from downstream_tx.db import schema

    cluster = Cluster.load(base)
    plain = schema.upgrade_txn

    def upgrade_txn(txn, steps):
        before, after = plain(txn, steps)
        if txn.engine_name == "mysql" and before < after:
            database = txn.scalar("SELECT DATABASE()")
            shard_tables(cluster, database, lambda statement: [list(r) for r in txn.execute(statement).fetchall()])
        return before, after

    schema.upgrade_txn = upgrade_txn


def main(argv: list[str] | None = None) -> int:
    parser, sub, start = local.cli_parser(
        "A MariaDB Spider head and backends on loopback.", "create and start a head and its backends under DIR",
        ("--backends", 2), "dtx_spider", (("stop", "stop every server"), ("status", "each server's state")))
    start.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                       help="a Spider setting of the head (e.g. spider_internal_xa=1)")
    shard = sub.add_parser("shard", help="the node's schema on DATABASE, its tables on the backends")
    shard.add_argument("dir")
    shard.add_argument("database")
    args = parser.parse_args(argv)

    def command() -> None:
        if args.command == "start":
            options = dict(s.split("=", 1) for s in args.set)
            cluster = Cluster(os.path.abspath(args.dir), args.backends, args.database, args.user, args.password,
                              options)
            cluster.start()
            print(json.dumps({"url": cluster.url(), "pids": {s.name: s.pid for s in cluster.servers}}, indent=2))
            return
        cluster = Cluster.load(args.dir)
        if args.command == "stop":
            cluster.stop()
        elif args.command == "shard":
            tables = cluster.shard(args.database)
            print(f"{len(tables)} tables on the backends; the node's URL: {cluster.url(args.database)}")
        elif args.command == "status":
            def state(name: str) -> str:
                spider = cluster.sql("head", "SELECT COUNT(*) FROM information_schema.tables "
                                             "WHERE engine = 'SPIDER'")[0][0] if name == "head" else "-"
                return f"running, Spider tables {spider}"

            local.print_status(cluster, [s.name for s in cluster.servers], state)

    return local.run_cli(command)


__all__ = ["Cluster", "ClusterError", "Server", "free_ports", "group_alive", "leftovers", "missing"]

if __name__ == "__main__":
    sys.exit(main())
