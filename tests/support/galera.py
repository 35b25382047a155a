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

import argparse
import atexit
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

PROVIDER = "/usr/lib/galera/libgalera_smm.so"
#: the programs a cluster needs, besides the provider
PROGRAMS = ("mariadbd", "mariadb-install-db", "mariadb", "rsync")
#: the user each mariadbd runs as (it owns the node's directory)
RUN_AS = "mysql"
SBIN = ("/usr/sbin", "/usr/local/sbin", "/sbin")


def _which(name: str) -> str | None:
    path = os.environ.get("PATH", "") + os.pathsep + os.pathsep.join(SBIN)
    return shutil.which(name, path=path)


def missing() -> str | None:
    """Why a cluster cannot be started here (None: it can)."""
    if not os.path.exists(PROVIDER):
        return f"Galera is not installed ({PROVIDER} missing: apt-get install galera-4)"
    for program in PROGRAMS:
        if _which(program) is None:
            return f"{program} not found (apt-get install mariadb-server rsync)"
    if os.geteuid() != 0:
        return "the Galera test cluster is started as root (CI runs as root)"
    try:
        pwd.getpwnam(RUN_AS)
    except KeyError:
        return f"no {RUN_AS} user to run mariadbd as (apt-get install mariadb-server creates it)"
    return None


def _reachable_by(path: str, user: str) -> bool:
    """Whether every directory above ``path`` lets ``user`` (not root) pass."""
    entry = pwd.getpwnam(user)
    parent = os.path.dirname(os.path.abspath(path))
    while True:
        st = os.stat(parent)
        if st.st_uid == entry.pw_uid:
            ok = st.st_mode & 0o100
        elif st.st_gid == entry.pw_gid:
            ok = st.st_mode & 0o010
        else:
            ok = st.st_mode & 0o001
        if not ok:
            return False
        if parent == "/":
            return True
        parent = os.path.dirname(parent)


def free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports (bound together, then released)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class ClusterError(RuntimeError):
    pass


@dataclass
class Node:
    index: int  # 1-based
    dir: str
    port: int  # SQL
    gcomm_port: int
    ist_port: int
    sst_port: int
    pid: int | None = None

    @property
    def socket(self) -> str:
        return os.path.join(self.dir, "mysqld.sock")

    @property
    def cnf(self) -> str:
        return os.path.join(self.dir, "my.cnf")

    @property
    def datadir(self) -> str:
        return os.path.join(self.dir, "data")

    @property
    def error_log(self) -> str:
        return os.path.join(self.dir, "error.log")


@dataclass
class Cluster:
    """A Galera cluster under ``base``; ``Cluster.load(base)`` re-reads one started earlier."""

    base: str
    size: int = 3
    database: str = "dtx_gal"
    user: str = "dtx"
    password: str = "dtx-test"
    nodes: list[Node] = field(default_factory=list)

    # --- set-up ---------------------------------------------------------------------------------

    def _plan(self) -> None:
        ports = free_ports(4 * self.size)
        self.nodes = [Node(i + 1, os.path.join(self.base, f"node{i + 1}"), *ports[4 * i:4 * i + 4])
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
        text = f"""[mysqld]
user={RUN_AS}
datadir={node.datadir}
socket={node.socket}
pid-file={node.dir}/mysqld.pid
port={node.port}
bind-address=127.0.0.1
log-error={node.error_log}
skip-name-resolve
performance_schema=OFF
character-set-server=utf8mb4
collation-server=utf8mb4_bin
default_storage_engine=InnoDB
innodb_buffer_pool_size=64M
innodb_log_file_size=32M
innodb_flush_log_at_trx_commit=2
innodb_autoinc_lock_mode=2
binlog_format=ROW
max_connections=300

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

    def _save(self) -> None:
        data = asdict(self)
        data["urls"] = self.urls()
        data["url"] = self.url()
        Path(self.base, "cluster.json").write_text(json.dumps(data, indent=2) + "\n")

    @classmethod
    def load(cls, base: str | os.PathLike) -> Cluster:
        data = json.loads(Path(base, "cluster.json").read_text())
        data.pop("urls", None)
        data.pop("url", None)
        nodes = [Node(**n) for n in data.pop("nodes")]
        return cls(nodes=nodes, **data)

    # --- addresses ------------------------------------------------------------------------------

    def url(self, index: int | None = None, database: str | None = None) -> str:
        """The database URL of node ``index`` (1-based), or (None) one listing every node."""
        nodes = self.nodes if index is None else [self.nodes[index - 1]]
        hosts = ",".join(f"127.0.0.1:{n.port}" for n in nodes)
        return f"mysql://{self.user}:{self.password}@{hosts}/{database or self.database}"

    def urls(self) -> list[str]:
        return [self.url(n.index) for n in self.nodes]

    # --- processes ------------------------------------------------------------------------------

    def _spawn(self, node: Node, bootstrap: bool) -> None:
        argv = [_which("mariadbd"), f"--defaults-file={node.cnf}"]
        if bootstrap:
            argv.append("--wsrep-new-cluster")
        with open(os.path.join(node.dir, "stdout.log"), "ab") as out:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True, close_fds=True)
        node.pid = proc.pid
        _children[proc.pid] = proc
        self._save()

    def alive(self, index: int) -> bool:
        node = self.nodes[index - 1]
        return node.pid is not None and _alive(node.pid)

    def sql(self, index: int, statement: str, timeout: float = 30.0) -> list[list[str]]:
        """Run ``statement`` as root on node ``index``; rows as lists of strings."""
        node = self.nodes[index - 1]
        done = subprocess.run(
            [_which("mariadb"), "--no-defaults", f"--socket={node.socket}", "-uroot", "-N", "-B",
             "-e", statement],
            capture_output=True, text=True, timeout=timeout)
        if done.returncode:
            raise ClusterError(f"node{index}: {done.stderr.strip()}")
        return [line.split("\t") for line in done.stdout.splitlines()]

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

    def log_tail(self, index: int, lines: int = 30) -> str:
        try:
            return "\n".join(Path(self.nodes[index - 1].error_log).read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no error log)"

    def start(self, timeout: float = 120.0, stop_at_exit: bool = False) -> Cluster:
        """Create, bootstrap and join every node; create the database and its user.
        ``stop_at_exit``: stop the cluster when this interpreter exits, if nothing did before (a
        test run interrupted between its set-up and its tear-down leaves no database running)."""
        reason = missing()
        if reason:
            raise ClusterError(reason)
        os.makedirs(self.base, exist_ok=True)
        os.chmod(self.base, 0o755)  # the cluster's own directory: mariadbd (as mysql) works in it
        if not _reachable_by(os.path.join(self.base, "x"), RUN_AS):
            raise ClusterError(f"{self.base} is not reachable by the {RUN_AS} user (every directory above "
                               "it needs o+x): pick a directory under /tmp")
        if os.path.exists(os.path.join(self.base, "cluster.json")):
            raise ClusterError(f"{self.base} already holds a cluster (stop it and remove the directory)")
        self._plan()
        entry = pwd.getpwnam(RUN_AS)
        for node in self.nodes:
            os.makedirs(node.datadir)
            self._write_cnf(node)
            for path in (node.dir, node.datadir):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        first = self.nodes[0]
        done = subprocess.run(
            [_which("mariadb-install-db"), f"--defaults-file={first.cnf}", f"--user={RUN_AS}",
             "--auth-root-authentication-method=socket", "--skip-test-db"],
            capture_output=True, text=True, timeout=timeout)
        if done.returncode:
            raise ClusterError(f"mariadb-install-db failed:\n{done.stdout}{done.stderr}")
        if stop_at_exit:
            atexit.register(self.stop)
        try:
            self._spawn(first, bootstrap=True)
            self._wait_socket(first, timeout)
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
                self._spawn(node, bootstrap=False)
                self.wait_synced([n.index for n in self.nodes[:node.index]], timeout=timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_socket(self, node: Node, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if not self.alive(node.index):
                raise ClusterError(f"node{node.index} exited:\n{self.log_tail(node.index)}")
            if os.path.exists(node.socket):
                try:
                    self.sql(node.index, "SELECT 1", timeout=10)
                    return
                except (ClusterError, subprocess.TimeoutExpired):
                    pass
            if time.monotonic() > deadline:
                raise ClusterError(f"node{node.index} did not come up:\n{self.log_tail(node.index)}")
            time.sleep(0.2)

    def start_node(self, index: int, timeout: float = 120.0) -> None:
        """(Re)start a stopped or killed node; it rejoins (IST or SST) and is Synced on return."""
        node = self.nodes[index - 1]
        if self.alive(index):
            raise ClusterError(f"node{index} is running")
        self._spawn(node, bootstrap=False)
        running = [n.index for n in self.nodes if self.alive(n.index)]
        self.wait_synced(running, timeout=timeout)

    def kill_node(self, index: int) -> None:
        """SIGKILL node ``index`` and everything it spawned (a crash)."""
        node = self.nodes[index - 1]
        if node.pid is not None:
            _end_group(node.pid, signal.SIGKILL, 10.0)
            node.pid = None
            self._save()

    def stop_node(self, index: int, timeout: float = 60.0) -> None:
        """Stop node ``index`` cleanly (SIGTERM; SIGKILL if it has not exited after ``timeout``)."""
        node = self.nodes[index - 1]
        if node.pid is not None:
            _end_group(node.pid, signal.SIGTERM, timeout)
            node.pid = None
            self._save()

    def stop(self, timeout: float = 60.0) -> None:
        """Stop every node, the last one to leave last (clean shutdown, nothing left running)."""
        for node in reversed(self.nodes):
            self.stop_node(node.index, timeout)


#: processes this interpreter started (reaped here so they do not linger as zombies)
_children: dict[int, subprocess.Popen] = {}


def _alive(pid: int) -> bool:
    proc = _children.get(pid)
    if proc is not None:
        return proc.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie of another parent counts as gone
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def group_alive(pgid: int) -> bool:
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            return True
    return False


def leftovers(base: str) -> list[str]:
    """Command lines of running processes that name ``base`` (a stopped cluster leaves none)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            with open(f"/proc/{entry}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    continue
        except OSError:
            continue
        if base in cmdline:
            found.append(f"{entry}: {cmdline}")
    return found


def _end_group(pid: int, signum: int, timeout: float) -> None:
    """Send ``signum`` to the process group led by ``pid``; after ``timeout``, SIGKILL whatever is
    left of it. Returns once no process of the group runs."""
    def send(sig: int) -> None:
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            pass

    send(signum)
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    proc = _children.pop(pid, None)
    if _alive(pid) or group_alive(pid):
        send(signal.SIGKILL)
        end = time.monotonic() + 10
        while (_alive(pid) or group_alive(pid)) and time.monotonic() < end:
            time.sleep(0.1)
    if proc is not None:
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cluster.sh", description="A MariaDB Galera cluster on loopback ports.")
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser("start", help="create and start a cluster under DIR")
    start.add_argument("dir")
    start.add_argument("--nodes", type=int, default=3)
    start.add_argument("--database", default="dtx_gal")
    start.add_argument("--user", default="dtx")
    start.add_argument("--password", default="dtx-test")
    for name, text in (("stop", "stop every node"), ("status", "wsrep state of each node")):
        sub.add_parser(name, help=text).add_argument("dir")
    for name, text in (("kill", "SIGKILL one node"), ("stop-node", "stop one node"),
                       ("start-node", "restart one node")):
        p = sub.add_parser(name, help=text)
        p.add_argument("dir")
        p.add_argument("node", type=int)
    args = parser.parse_args(argv)
    try:
        if args.command == "start":
            cluster = Cluster(os.path.abspath(args.dir), args.nodes, args.database, args.user, args.password)
            cluster.start()
            print(json.dumps({"url": cluster.url(), "urls": cluster.urls(),
                              "pids": [n.pid for n in cluster.nodes]}, indent=2))
            return 0
        cluster = Cluster.load(args.dir)
        if args.command == "stop":
            cluster.stop()
        elif args.command == "status":
            for node in cluster.nodes:
                if not cluster.alive(node.index):
                    print(f"node{node.index} port {node.port}: not running")
                    continue
                st = cluster.status(node.index)
                print(f"node{node.index} port {node.port} pid {node.pid}: {st.get('wsrep_local_state_comment')}, "
                      f"cluster size {st.get('wsrep_cluster_size')}, {st.get('wsrep_cluster_status')}")
        elif args.command == "kill":
            cluster.kill_node(args.node)
        elif args.command == "stop-node":
            cluster.stop_node(args.node)
        elif args.command == "start-node":
            cluster.start_node(args.node)
    except ClusterError as e:
        print(f"cluster.sh: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
