"""A throw-away MariaDB Galera cluster on loopback ports: start, stop and kill nodes.

Used by the Galera tests and by hand (docs/operations.md, "A Galera cluster for trying it out"),
through ``contrib/galera/cluster.sh`` or ``python3 tests/support/galera.py``::

    cluster.sh start DIR [--nodes 3] [--database dtx_gal] [--user dtx] [--password dtx-test]
    cluster.sh status DIR          # wsrep state of each node
    cluster.sh stop DIR            # every node, cleanly (SIGTERM, then SIGKILL after a timeout)
    cluster.sh kill DIR N          # SIGKILL node N (1-based); start-node DIR N brings it back
    cluster.sh start-node DIR N

Everything lives under DIR: one directory per node (``node1/``: ``my.cnf``, ``data/``,
``mysqld.sock``, ``error.log``) and ``cluster.json`` (ports, pids, the database URL of each node
and one listing every node). The ports — SQL, group communication, IST and SST per node — are
chosen at run time (free loopback ports). Node 1 bootstraps the cluster (``--wsrep-new-cluster``,
after ``mariadb-install-db``); the others join it with an rsync state transfer (no mariabackup
needed). ``start`` returns once every node is ``Synced`` in a cluster of the full size, the
database exists and the user may use it (``ALL`` on the database, from 127.0.0.1 and localhost).

Each node runs in a session of its own (``mariadbd`` and the state-transfer helpers it spawns), so
``stop``/``kill`` end the whole process group: nothing is left running. The module is standard
library only (SQL goes through the ``mariadb`` client on the node's Unix socket, as root) and
needs ``galera-4`` (``/usr/lib/galera/libgalera_smm.so``), ``mariadb-server`` and ``rsync``. It
is started as root, as CI runs, and each ``mariadbd`` switches to the ``mysql`` user, which owns
the node's directory: the rsync daemon of a state transfer then runs as that user too (started by
root it would switch to ``nobody`` and could not write the data directory). DIR must therefore be
reachable by ``mysql`` (the tests use a fresh directory under the system's temporary directory).
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

PROVIDER = "/usr/lib/galera/libgalera_smm.so"
#: the programs a cluster needs, besides the provider
PROGRAMS = ("mariadbd", "mariadb-install-db", "mariadb", "rsync")


def missing() -> str | None:
    """Why a cluster cannot be started here (None: it can)."""
    if not os.path.exists(PROVIDER):
        return f"Galera is not installed ({PROVIDER} missing: apt-get install galera-4)"
    return local.missing_programs(PROGRAMS, "mariadb-server rsync", "Galera")


@dataclass
class Node(local.LocalServer):
    index: int  # 1-based
    gcomm_port: int
    ist_port: int
    sst_port: int

    @property
    def name(self) -> str:
        return f"node{self.index}"


@dataclass
class Cluster(local.LocalServers):
    """A Galera cluster under ``base``; ``Cluster.load(base)`` re-reads one started earlier.
    Its nodes are known by their 1-based index."""

    SERVER = Node
    SERVERS = "nodes"

    base: str
    size: int = 3
    database: str = "dtx_gal"
    user: str = "dtx"
    password: str = "dtx-test"
    nodes: list[Node] = field(default_factory=list)

    # --- set-up ---------------------------------------------------------------------------------

    _missing = staticmethod(missing)

    def _server(self, key: int) -> Node:
        return self.nodes[key - 1]

    def _plan(self) -> None:
        ports = free_ports(4 * self.size)
        self.nodes = [Node(os.path.join(self.base, f"node{i + 1}"), ports[4 * i], index=i + 1,
                           gcomm_port=ports[4 * i + 1], ist_port=ports[4 * i + 2], sst_port=ports[4 * i + 3])
                      for i in range(self.size)]

    def _write_cnf(self, node: Node) -> None:
        gcomm = ",".join(f"127.0.0.1:{n.gcomm_port}" for n in self.nodes)
        # short failure detection (a killed node leaves the view within seconds) but not so short
        # that a busy machine splits the cluster
        options = ";".join([
            f"gmcast.listen_addr=tcp://127.0.0.1:{node.gcomm_port}",
            f"ist.recv_addr=127.0.0.1:{node.ist_port}",
            "gcache.size=64M",
            "evs.keepalive_period=PT1S",
            "evs.suspect_timeout=PT4S",
            "evs.inactive_timeout=PT8S",
            "evs.inactive_check_period=PT1S",
            "evs.install_timeout=PT8S",
        ])
        text = node.mysqld_cnf("127.0.0.1", "innodb_autoinc_lock_mode=2\nbinlog_format=ROW\n") + f"""
[galera]
wsrep_on=ON
wsrep_provider={PROVIDER}
wsrep_cluster_name=dtx-test
wsrep_cluster_address=gcomm://{gcomm}
wsrep_node_name=node{node.index}
wsrep_node_address=127.0.0.1
wsrep_node_incoming_address=127.0.0.1:{node.port}
wsrep_sst_method=rsync
wsrep_sst_receive_address=127.0.0.1:{node.sst_port}
wsrep_provider_options="{options}"
wsrep_slave_threads=2
"""
        Path(node.cnf).write_text(text)

    def _to_install(self) -> list[Node]:
        return self.nodes[:1]  # the others take a state transfer from it

    def _extra_json(self) -> dict[str, Any]:
        return {"urls": self.urls(), "url": self.url()}

    # --- addresses ------------------------------------------------------------------------------

    def url(self, index: int | None = None, database: str | None = None) -> str:
        """The database URL of node ``index`` (1-based), or (None) one listing every node."""
        nodes = self.nodes if index is None else [self.nodes[index - 1]]
        hosts = ",".join(f"127.0.0.1:{n.port}" for n in nodes)
        return f"mysql://{self.user}:{self.password}@{hosts}/{database or self.database}"

    def urls(self) -> list[str]:
        return [self.url(n.index) for n in self.nodes]

    # --- processes ------------------------------------------------------------------------------

    def status(self, index: int) -> dict[str, str]:
        """The node's wsrep status variables (``wsrep_cluster_size``, ``wsrep_local_state_comment``…)."""
        return {k.lower(): v for k, v in self.sql(index, "SHOW GLOBAL STATUS LIKE 'wsrep%'", timeout=10)}

    def wait_synced(self, indexes: list[int] | None = None, size: int | None = None,
                    timeout: float = 120.0) -> None:
        """Wait until every node of ``indexes`` (default all) is Synced in a primary component of
        ``size`` (default: that many) nodes."""
        indexes = indexes or [n.index for n in self.nodes]
        size = size or len(indexes)
        deadline = time.monotonic() + timeout
        last = ""
        while True:
            states = []
            for i in indexes:
                if not self.alive(i):
                    raise ClusterError(f"node{i} exited:\n{self.log_tail(i)}")
                try:
                    st = self.status(i)
                except (ClusterError, subprocess.TimeoutExpired) as e:
                    states.append(f"node{i}: {e}")
                    continue
                ok = (st.get("wsrep_local_state_comment") == "Synced" and st.get("wsrep_ready") == "ON"
                      and st.get("wsrep_cluster_status") == "Primary"
                      and st.get("wsrep_cluster_size") == str(size))
                states.append("" if ok else f"node{i}: {st.get('wsrep_local_state_comment')} "
                              f"size={st.get('wsrep_cluster_size')} {st.get('wsrep_cluster_status')}")
            last = "; ".join(s for s in states if s)
            if not last:
                return
            if time.monotonic() > deadline:
                raise ClusterError(f"cluster not synced after {timeout:.0f}s: {last}")
            time.sleep(0.25)

    def _boot(self, timeout: float) -> None:
        """Bootstrap node 1, create the database and its user, then join the other nodes one at a time."""
        self._spawn(self.nodes[0], "--wsrep-new-cluster")
        self._wait_up(1, timeout)
        self.wait_synced([1], timeout=timeout)
        self.sql(1, f"""
CREATE DATABASE IF NOT EXISTS `{self.database}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;
CREATE USER IF NOT EXISTS '{self.user}'@'127.0.0.1' IDENTIFIED BY '{self.password}';
CREATE USER IF NOT EXISTS '{self.user}'@'localhost' IDENTIFIED BY '{self.password}';
GRANT ALL PRIVILEGES ON `{self.database}%`.* TO '{self.user}'@'127.0.0.1';
GRANT ALL PRIVILEGES ON `{self.database}%`.* TO '{self.user}'@'localhost';
""")
        # joiners one at a time: each takes a full state transfer from a synced donor
        for node in self.nodes[1:]:
            self._spawn(node)
            self.wait_synced([n.index for n in self.nodes[:node.index]], timeout=timeout)

    def start(self, timeout: float = 120.0, stop_at_exit: bool = False) -> Cluster:
        """Create, bootstrap and join every node; create the database and its user.
        ``stop_at_exit``: stop the cluster when this interpreter exits, if nothing did before (a
        test run interrupted between its set-up and its tear-down leaves no database running)."""
        return super().start(timeout, stop_at_exit)

    def start_node(self, index: int, timeout: float = 120.0) -> None:
        """(Re)start a stopped or killed node; it rejoins (IST or SST) and is Synced on return."""
        if self.alive(index):
            raise ClusterError(f"node{index} is running")
        self._spawn(self.nodes[index - 1])
        running = [n.index for n in self.nodes if self.alive(n.index)]
        self.wait_synced(running, timeout=timeout)

    def kill_node(self, index: int) -> None:
        """SIGKILL node ``index`` and everything it spawned (a crash)."""
        self._end(self.nodes[index - 1], signal.SIGKILL, 10.0)

    def stop_node(self, index: int, timeout: float = 60.0) -> None:
        """Stop node ``index`` cleanly (SIGTERM; SIGKILL if it has not exited after ``timeout``)."""
        self._end(self.nodes[index - 1], signal.SIGTERM, timeout)

    def _stop_order(self) -> list[Node]:
        return list(reversed(self.nodes))  # the last one to leave last


def main(argv: list[str] | None = None) -> int:
    parser, sub, _ = local.cli_parser(
        "A MariaDB Galera cluster on loopback ports.", "create and start a cluster under DIR", ("--nodes", 3),
        "dtx_gal", (("stop", "stop every node"), ("status", "wsrep state of each node")))
    for name, text in (("kill", "SIGKILL one node"), ("stop-node", "stop one node"),
                       ("start-node", "restart one node")):
        p = sub.add_parser(name, help=text)
        p.add_argument("dir")
        p.add_argument("node", type=int)
    args = parser.parse_args(argv)

    def command() -> None:
        if args.command == "start":
            cluster = Cluster(os.path.abspath(args.dir), args.nodes, args.database, args.user, args.password)
            cluster.start()
            print(json.dumps({"url": cluster.url(), "urls": cluster.urls(),
                              "pids": [n.pid for n in cluster.nodes]}, indent=2))
            return
        cluster = Cluster.load(args.dir)
        if args.command == "stop":
            cluster.stop()
        elif args.command == "status":
            def state(index: int) -> str:
                st = cluster.status(index)
                return (f"{st.get('wsrep_local_state_comment')}, cluster size {st.get('wsrep_cluster_size')}, "
                        f"{st.get('wsrep_cluster_status')}")

            local.print_status(cluster, [n.index for n in cluster.nodes], state)
        elif args.command == "kill":
            cluster.kill_node(args.node)
        elif args.command == "stop-node":
            cluster.stop_node(args.node)
        elif args.command == "start-node":
            cluster.start_node(args.node)

    return local.run_cli(command)


__all__ = ["Cluster", "ClusterError", "Node", "free_ports", "group_alive", "leftovers", "missing"]

if __name__ == "__main__":
    sys.exit(main())
