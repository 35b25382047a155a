"""``twistd downstream --workers N``: N node processes serving one listening socket.

The parent binds the listener (any endpoint: ``tcp:``, ``unix:``, a ``systemd:`` socket), creates
or upgrades the database once, then starts N children (``twistd -n downstream`` with the same
options) that inherit the listening socket as file descriptor 3 and adopt it
(``reactor.adoptStreamPort``): one accept queue shared by all, so a worker that dies or restarts
leaves the connections waiting in the queue to the others. (``SO_REUSEPORT`` would give each
worker its own queue, whose waiting connections are reset when that worker exits, and cannot be
used with a socket systemd passes or with port 0.) Every worker is a whole node: it serves every
route, and competes for the jobs lease (``jobs/leader.py``), so the periodic jobs run on one.

The parent serves nothing. It forwards SIGTERM and SIGHUP to every worker, restarts a worker that
dies after start-up, and speaks for all of them to systemd: ``READY=1`` once every worker said it
is ready (each child writes its notifications as lines to file descriptor 4), ``WATCHDOG=1`` only
while every worker keeps sending its own.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from twisted.application import service
from twisted.internet import defer, protocol
from twisted.logger import Logger

from downstream_tx.config import Config, endpoint_parts
from downstream_tx.startup import EXIT_START_FAILED, DaemonProcess
from downstream_tx.version import full_version

log = Logger()

#: the environment of a worker: its index, the worker count, the listening socket's family
WORKER_INDEX_ENV = "DTX_WORKER_INDEX"
WORKER_COUNT_ENV = "DTX_WORKER_COUNT"
WORKER_FAMILY_ENV = "DTX_WORKER_FAMILY"
#: file descriptors a worker gets: the listening socket, the pipe of its notifications
LISTEN_FD = 3
STATUS_FD = 4
#: seconds before a worker that died after start-up is started again
RESTART_DELAY = 1.0
TWISTD = "from twisted.scripts.twistd import run; run()"
_PARENT_ONLY = ("NOTIFY_SOCKET", "WATCHDOG_PID", "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")


@dataclass(frozen=True)
class Worker:
    """What a worker process knows about itself (from its environment)."""

    index: int
    count: int
    family: socket.AddressFamily
    listen_fd: int = LISTEN_FD
    status_fd: int = STATUS_FD


def worker_from_environ(environ: Mapping[str, str]) -> Worker | None:
    if WORKER_INDEX_ENV not in environ:
        return None
    return Worker(int(environ[WORKER_INDEX_ENV]), int(environ.get(WORKER_COUNT_ENV, "1")),
                  socket.AddressFamily[environ.get(WORKER_FAMILY_ENV, "AF_INET")])


def worker_config(config: Config, worker: Worker) -> Config:
    """A worker's settings: its own instance name (``<name>/<index>``; the default ``host:pid`` is
    its own already) and metrics port (the configured port + its index)."""
    changes: dict[str, Any] = {}
    if config.instance_name:
        changes["instance_name"] = f"{config.instance_name}/{worker.index}"
    if config.metrics_listen:
        changes["metrics_listen"] = shifted_endpoint(config.metrics_listen, worker.index)
    return config.replace(**changes) if changes else config


def shifted_endpoint(description: str, offset: int) -> str:
    """A ``tcp:`` endpoint string with its port moved by ``offset`` (port 0 stays 0)."""
    kind, positional, keywords = endpoint_parts(description)
    port = int(keywords.get("port", positional[0] if positional else 0))
    if port == 0 or offset == 0:
        return description
    parts = [kind] + [str(port + offset) if i == 0 and "port" not in keywords else p for i, p in enumerate(positional)]
    parts += [f"{k}={port + offset if k == 'port' else v}" for k, v in keywords.items()]
    return ":".join(p.replace(":", "\\:") if i else p for i, p in enumerate(parts))


def refusal(config: Config) -> str | None:
    """Why ``workers`` > 1 cannot run with these settings (one line), or None."""
    if config.workers <= 1:
        return None
    if config.db_url.startswith("sqlite"):
        return ("workers > 1 needs MySQL/MariaDB (--db mysql://…), the scale-out path: on SQLite the node's "
                "reads and writes are one atomic step only within one process (docs/performance.md, "
                "\"Scale-out\")")
    kind = endpoint_parts(config.listen)[0]
    if kind in ("ssl", "tls"):
        return ("workers > 1 cannot share an ssl:/tls: listener: terminate TLS in front of the node "
                "(nginx, HAProxy) and listen on tcp:, or run one worker")
    if config.metrics_listen and endpoint_parts(config.metrics_listen)[0] != "tcp":
        return "workers > 1 needs a tcp: metrics_listen (worker i serves its /metrics on that port + i)"
    return None


class _NoAccept(protocol.ServerFactory):
    """The parent never accepts (its listening port is paused); the workers do."""

    noisy = False

    def logPrefix(self) -> str:
        """How Twisted names the listener in its "… starting on <port>" line (else the class name)."""
        return "downstream-tx listener shared by the workers"

    def buildProtocol(self, addr: Any) -> None:
        return None


class WorkerProcess(protocol.ProcessProtocol):
    def __init__(self, supervisor: WorkerSupervisor, index: int):
        self.supervisor = supervisor
        self.index = index
        self.buffer = b""
        self.ready = False
        self.pid: int | None = None

    def connectionMade(self) -> None:
        self.pid = self.transport.pid

    def childDataReceived(self, fd: int, data: bytes) -> None:
        if fd != STATUS_FD:
            return
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        for line in lines:
            self.supervisor.status(self, line.decode("ascii", "replace").strip())

    def processEnded(self, reason: Any) -> None:
        value = reason.value
        self.supervisor.ended(self, getattr(value, "exitCode", None), getattr(value, "signal", None))


class WorkerSupervisor(DaemonProcess, service.Service):
    """The parent of ``--workers N`` (see the module's docstring)."""

    def __init__(self, config: Config, reactor: Any, child_args: list[str], environ: Mapping[str, str] | None = None):
        from downstream_tx.logs import LogSetup
        from downstream_tx.systemd import Notifier

        self.config = config
        self.reactor = reactor
        self.child_args = child_args
        self.environ = dict(os.environ if environ is None else environ)
        self.logging = LogSetup(config.log_format, config.log_file)
        self.notifier = Notifier(self.environ)
        self.workers: dict[int, WorkerProcess] = {}
        self.port: Any = None
        self.started = False
        self.stopping = False
        self.ready: defer.Deferred = defer.Deferred()
        self._all_ended: defer.Deferred | None = None
        self._watchdog_seen: set[int] = set()

    # --- start ----------------------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self.reactor.callWhenRunning(self._install_signal_handlers)
        defer.ensureDeferred(self._start()).addErrback(self._fatal)

    async def _start(self) -> None:
        from downstream_tx.listeners import server_endpoint
        from downstream_tx.runtime import open_database

        config = self.config
        self.port = await server_endpoint(self.reactor, config.listen, self.environ).listen(_NoAccept())
        self.port.stopReading()
        # the schema is created or upgraded once, here, not by N workers at once
        db = await open_database(config, self.reactor)
        self.db_description = db.engine.describe()
        db.close()
        for index in range(config.workers):
            self._spawn(index)
        await self.ready

    def _spawn(self, index: int) -> None:
        env = {k: v for k, v in self.environ.items() if k not in _PARENT_ONLY}
        env.update({WORKER_INDEX_ENV: str(index), WORKER_COUNT_ENV: str(self.config.workers),
                    WORKER_FAMILY_ENV: self.port.socket.family.name})
        if "WATCHDOG_USEC" in env:
            env["WATCHDOG_PID"] = ""  # each worker pings its parent (STATUS_FD) at the same interval
        worker = WorkerProcess(self, index)
        self.workers[index] = worker
        self.reactor.spawnProcess(worker, sys.executable, [sys.executable, "-c", TWISTD, *self.child_args],
                                  env=env, path=os.getcwd(),
                                  childFDs={0: "w", 1: 1, 2: 2, LISTEN_FD: self.port.fileno(), STATUS_FD: "r"})

    def status(self, worker: WorkerProcess, line: str) -> None:
        if line == "READY=1" and not worker.ready:
            worker.ready = True
            if not self.started and all(w.ready for w in self.workers.values()) \
                    and len(self.workers) == self.config.workers:
                self.started = True
                host = self.port.getHost()
                log.info("downstream-tx {version} listening on {address} ({n} workers, pids {pids}; {db})",
                         version=full_version(), address=f"{getattr(host, 'host', '')}:{getattr(host, 'port', '')}",
                         n=len(self.workers), pids=" ".join(str(w.pid) for w in self.workers.values()),
                         db=self.db_description)
                self.notifier.ready()
                self.ready.callback(None)
            elif self.started:
                log.info("worker {index} (pid {pid}) is ready again", index=worker.index, pid=worker.pid)
        elif line == "WATCHDOG=1":
            self._watchdog_seen.add(worker.index)
            if self._watchdog_seen >= set(self.workers):
                self._watchdog_seen.clear()
                self.notifier.watchdog()

    def ended(self, worker: WorkerProcess, code: int | None, signum: int | None) -> None:
        if self.workers.get(worker.index) is worker:
            del self.workers[worker.index]
        how = f"signal {signum}" if signum else f"status {code}"
        if self.stopping:
            log.info("worker {index} (pid {pid}) stopped ({how})", index=worker.index, pid=worker.pid, how=how)
            if not self.workers and self._all_ended is not None and not self._all_ended.called:
                self._all_ended.callback(None)
            return
        if not self.started:
            log.critical("cannot start: worker {index} exited with {how} during start-up (its log says why); "
                         "stopping the others", index=worker.index, how=how)
            self._stop_with(code or EXIT_START_FAILED)
            return
        log.warn("worker {index} (pid {pid}) exited with {how}; starting another in {delay:g}s",
                 index=worker.index, pid=worker.pid, how=how, delay=RESTART_DELAY)
        self._watchdog_seen.discard(worker.index)
        self.reactor.callLater(RESTART_DELAY, self._respawn, worker.index)

    def _respawn(self, index: int) -> None:
        if not self.stopping and index not in self.workers:
            self._spawn(index)

    # --- signals and stop -------------------------------------------------------------------------

    def reload(self) -> None:
        """SIGHUP: reopen the parent's log file and pass the signal to every worker (each reopens its own)."""
        self.notifier.reloading()
        self.logging.reopen()
        self._signal_all(signal.SIGHUP)
        log.info("SIGHUP: log file reopened, passed to {n} workers", n=len(self.workers))
        self.notifier.ready()

    def _signal_all(self, signum: int) -> None:
        for worker in list(self.workers.values()):
            try:
                worker.transport.signalProcess(signum)
            except Exception:  # already gone: processEnded follows
                pass

    @defer.inlineCallbacks
    def stopService(self):
        super().stopService()
        self.stopping = True
        self.notifier.stopping()
        if self.port is not None:
            # the workers' copies keep the socket open while they drain; once they close theirs, new
            # connections are refused instead of waiting in a queue nobody accepts from
            yield self.port.stopListening()
            self.port = None
        if self.workers:
            self._all_ended = defer.Deferred()
            log.info("stopping: SIGTERM to {n} workers", n=len(self.workers))
            self._signal_all(signal.SIGTERM)
            limit = self.config.shutdown_timeout + 10.0
            timer = self.reactor.callLater(limit, self._kill_rest)
            yield self._all_ended
            if timer.active():
                timer.cancel()
        if self.port is not None:
            yield self.port.stopListening()
        log.info("stopped")

    def _kill_rest(self) -> None:
        log.warn("{n} workers still running; killing them", n=len(self.workers))
        self._signal_all(signal.SIGKILL)


