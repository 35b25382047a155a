"""Local ``mariadbd`` processes under one base directory: what the Galera and Spider test clusters share.

:class:`LocalServer` is one server (its directory, SQL port and process id; ``my.cnf``, ``data/``,
``mysqld.sock`` and ``error.log`` inside the directory). :class:`LocalServers` is a set of them under a
base directory, each known by a key (a Galera node's 1-based index, a Spider server's name): create,
spawn, query (as root through the ``mariadb`` client on the server's Unix socket), wait until up,
kill, stop, and record the whole in ``cluster.json`` (``load`` re-reads it). What differs — each
server's ``my.cnf``, what runs once every server is up, the order of a clean stop — is the
subclass's (tests/support/galera.py, tests/support/spider.py).

Each server runs in a session of its own (``mariadbd`` and whatever it spawns), so a stop or a kill
ends the whole process group: nothing is left running. Standard library only; started as root, each
``mariadbd`` switching to the :data:`RUN_AS` user, which owns the server's directory.
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
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

#: the user each mariadbd runs as (it owns the server's directory)
RUN_AS = "mysql"
SBIN = ("/usr/sbin", "/usr/local/sbin", "/sbin")


def _which(name: str) -> str | None:
    path = os.environ.get("PATH", "") + os.pathsep + os.pathsep.join(SBIN)
    return shutil.which(name, path=path)


def missing_programs(programs: tuple[str, ...], install: str, what: str) -> str | None:
    """Why local servers cannot be started here for lack of ``programs``, root or the :data:`RUN_AS`
    user (None: they can). ``install``: the packages to name; ``what``: the cluster's name."""
    for program in programs:
        if _which(program) is None:
            return f"{program} not found (apt-get install {install})"
    if os.geteuid() != 0:
        return f"the {what} test cluster is started as root (CI runs as root)"
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
class LocalServer:
    """One mariadbd: its directory and SQL port; ``pid`` while it runs (None: stopped)."""

    dir: str
    port: int
    pid: int | None = field(default=None, kw_only=True)

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

    def mysqld_cnf(self, bind: str, extra: str = "") -> str:
        """The ``[mysqld]`` section every server shares; ``extra``: lines of the caller's own."""
        return f"""[mysqld]
user={RUN_AS}
datadir={self.datadir}
socket={self.socket}
pid-file={self.dir}/mysqld.pid
port={self.port}
bind-address={bind}
log-error={self.error_log}
skip-name-resolve
performance_schema=OFF
character-set-server=utf8mb4
collation-server=utf8mb4_bin
default_storage_engine=InnoDB
innodb_buffer_pool_size=64M
innodb_log_file_size=32M
innodb_flush_log_at_trx_commit=2
{extra}max_connections=300
"""


class LocalServers:
    """Local mariadbd processes under ``self.base``, each known by a key (:meth:`_server`).

    A subclass is a dataclass with a ``base`` field and a list of :attr:`SERVER` in the field named
    :attr:`SERVERS`; it gives :meth:`_server`, :meth:`_plan`, :meth:`_write_cnf` and :meth:`_boot`
    (and :func:`missing`-like :meth:`_missing`)."""

    #: the server class (a :class:`LocalServer`) and the name of the field listing the servers
    SERVER: ClassVar[type[LocalServer]] = LocalServer
    SERVERS: ClassVar[str] = "servers"
    #: the default time limit of :meth:`sql`
    SQL_TIMEOUT: ClassVar[float] = 30.0

    base: str

    # --- to be given by the subclass ------------------------------------------------------------

    @staticmethod
    def _missing() -> str | None:
        raise NotImplementedError

    def _server(self, key: Any) -> LocalServer:
        raise NotImplementedError

    @staticmethod
    def _label(server: LocalServer) -> str:
        """The server's name in messages (``node1``, ``head``…)."""
        return server.name  # type: ignore[attr-defined]

    def _plan(self) -> None:
        raise NotImplementedError

    def _write_cnf(self, server: LocalServer) -> None:
        raise NotImplementedError

    def _to_install(self) -> list[LocalServer]:
        """The servers whose data directory ``mariadb-install-db`` initialises."""
        return self._servers

    def _boot(self, timeout: float) -> None:
        """Spawn the servers (prepared and installed) and set them up; the servers are stopped if it raises."""
        raise NotImplementedError

    def _extra_json(self) -> dict[str, Any]:
        """Keys written to ``cluster.json`` besides the fields (ignored by :meth:`load`)."""
        return {}

    def _stop_order(self) -> list[LocalServer]:
        return self._servers

    # --- state ----------------------------------------------------------------------------------

    @property
    def _servers(self) -> list[LocalServer]:
        return getattr(self, self.SERVERS)

    def _save(self) -> None:
        data = asdict(self)  # type: ignore[call-overload]
        data.update(self._extra_json())
        Path(self.base, "cluster.json").write_text(json.dumps(data, indent=2) + "\n")

    @classmethod
    def load(cls, base: str | os.PathLike):
        data = json.loads(Path(base, "cluster.json").read_text())
        fields = cls.__dataclass_fields__  # type: ignore[attr-defined]
        data = {k: v for k, v in data.items() if k in fields}  # not the _extra_json keys
        servers = [cls.SERVER(**s) for s in data.pop(cls.SERVERS)]
        return cls(**{cls.SERVERS: servers}, **data)

    # --- processes ------------------------------------------------------------------------------

    def _spawn(self, server: LocalServer, *options: str) -> None:
        argv = [_which("mariadbd"), f"--defaults-file={server.cnf}", *options]
        with open(os.path.join(server.dir, "stdout.log"), "ab") as out:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True, close_fds=True)
        server.pid = proc.pid
        _children[proc.pid] = proc
        self._save()

    def alive(self, key: Any) -> bool:
        server = self._server(key)
        return server.pid is not None and _alive(server.pid)

    def sql(self, key: Any, statement: str, timeout: float | None = None) -> list[list[str]]:
        """Run ``statement`` as root on server ``key``; rows as lists of strings."""
        server = self._server(key)
        done = subprocess.run(
            [_which("mariadb"), "--no-defaults", f"--socket={server.socket}", "-uroot", "-N", "-B",
             "-e", statement],
            capture_output=True, text=True, timeout=self.SQL_TIMEOUT if timeout is None else timeout)
        if done.returncode:
            raise ClusterError(f"{self._label(server)}: {done.stderr.strip()}")
        return [line.split("\t") for line in done.stdout.splitlines()]

    def log_tail(self, key: Any, lines: int = 30) -> str:
        try:
            return "\n".join(Path(self._server(key).error_log).read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no error log)"

    def _wait_up(self, key: Any, timeout: float) -> None:
        """Wait until server ``key`` answers on its socket (ClusterError if it exits or times out)."""
        label = self._label(self._server(key))
        deadline = time.monotonic() + timeout
        while True:
            if not self.alive(key):
                raise ClusterError(f"{label} exited:\n{self.log_tail(key)}")
            if os.path.exists(self._server(key).socket):
                try:
                    self.sql(key, "SELECT 1", timeout=10)
                    return
                except (ClusterError, subprocess.TimeoutExpired):
                    pass
            if time.monotonic() > deadline:
                raise ClusterError(f"{label} did not come up:\n{self.log_tail(key)}")
            time.sleep(0.2)

    def start(self, timeout: float = 120.0, stop_at_exit: bool = False):
        """Create every server's directory and data, start them and set them up (:meth:`_boot`).
        ``stop_at_exit``: stop the servers when this interpreter exits, if nothing did before (a
        test run interrupted between its set-up and its tear-down leaves no database running)."""
        reason = self._missing()
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
        for server in self._servers:
            os.makedirs(server.datadir)
            self._write_cnf(server)
            for path in (server.dir, server.datadir):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        for server in self._to_install():
            done = subprocess.run(
                [_which("mariadb-install-db"), f"--defaults-file={server.cnf}", f"--user={RUN_AS}",
                 "--auth-root-authentication-method=socket", "--skip-test-db"],
                capture_output=True, text=True, timeout=timeout)
            if done.returncode:
                raise ClusterError(f"mariadb-install-db ({self._label(server)}) failed:\n{done.stdout}{done.stderr}")
        if stop_at_exit:
            atexit.register(self.stop)
        try:
            self._boot(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _end(self, server: LocalServer, signum: int, timeout: float) -> None:
        """End ``server``'s process group with ``signum`` (SIGKILL after ``timeout``)."""
        if server.pid is not None:
            _end_group(server.pid, signum, timeout)
            server.pid = None
            self._save()

    def stop(self, timeout: float = 60.0) -> None:
        """Stop every server (:meth:`_stop_order`; clean shutdown, nothing left running)."""
        for server in self._stop_order():
            self._end(server, signal.SIGTERM, timeout)


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
    """Command lines of running processes that name ``base`` (stopped servers leave none)."""
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


def cli_parser(description: str, start_help: str, count: tuple[str, int], database: str,
               commands: tuple[tuple[str, str], ...]) -> tuple[argparse.ArgumentParser, Any, argparse.ArgumentParser]:
    """The ``cluster.sh`` command line both clusters share: ``start DIR`` with the ``count`` option
    (its flag and default), ``--database``, ``--user`` and ``--password``, and each of ``commands``
    (name, help) taking DIR. Returns the parser, its sub-parsers and ``start``'s parser."""
    parser = argparse.ArgumentParser(prog="cluster.sh", description=description)
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser("start", help=start_help)
    start.add_argument("dir")
    start.add_argument(count[0], type=int, default=count[1])
    start.add_argument("--database", default=database)
    start.add_argument("--user", default="dtx")
    start.add_argument("--password", default="dtx-test")
    for name, text in commands:
        sub.add_parser(name, help=text).add_argument("dir")
    return parser, sub, start


def run_cli(command: Callable[[], object]) -> int:
    """Run a ``cluster.sh`` command: 0, or 1 with the message of its :class:`ClusterError`."""
    try:
        command()
    except ClusterError as e:
        print(f"cluster.sh: {e}", file=sys.stderr)
        return 1
    return 0


def print_status(cluster: LocalServers, keys: list[Any], running: Callable[[Any], str]) -> None:
    """``cluster.sh status``: one line a server, ``running(key)`` telling the state of a running one."""
    for key in keys:
        server = cluster._server(key)
        label = cluster._label(server)
        if not cluster.alive(key):
            print(f"{label} port {server.port}: not running")
            continue
        print(f"{label} port {server.port} pid {server.pid}: {running(key)}")
