"""The twistd plugin's Options and service: ``twistd -n downstream [options]``."""

from __future__ import annotations

import os
import sys
from typing import Any

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python import usage

from downstream_tx.config import SETTINGS, Config, ConfigError, load_config, public_url_for
from downstream_tx.startup import EXIT_CONFIG, EXIT_START_FAILED, DaemonProcess, explain
from downstream_tx.version import full_version

log = Logger()

#: seconds a thread may hold the GIL while another waits for it (Python's default: 0.005). The
#: default made every database transaction's hop back from its pool thread wait behind the busy
#: reactor thread: ~200 transactions/s with a core idle (docs/performance.md). Set per process,
#: by makeService and downstream.tac.
GIL_SWITCH_INTERVAL = 0.0005


def _shown_default(setting: Any) -> str:
    value = setting.default
    if value is None:
        return {"db": "sqlite under data_dir", "chunk_dir": "<data_dir>/chunks",
                "public_url": "from the bound address"}.get(setting.name, "unset")
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return ",".join(f"{a}:{b}" for a, b in value) if value else "none"
    return str(value)


class Options(usage.Options):
    synopsis = "[--config FILE] [--listen ENDPOINT] [--db URL] [--data-dir DIR] [options]"
    longdesc = ("Run a downstream-tx proof-of-storage node. Every option is also a TOML key in --config "
                "and a DOWNSTREAM_* environment variable; precedence: defaults < file < environment < "
                "command line.")
    optParameters = [["config", "c", None, "TOML configuration file (or DOWNSTREAM_CONFIG)."]] + [
        [s.option, None, None, f"{s.help} [default: {_shown_default(s)}; env {s.env}]"] for s in SETTINGS
    ]

    def opt_version(self) -> None:
        print(f"downstream-tx {full_version()}")
        sys.exit(0)

    def parseOptions(self, options: list[str] | None = None) -> None:
        """A mistyped option is one line on standard error and exit status 2 — not twistd's whole
        help text with the error at its end."""
        try:
            super().parseOptions(options)
        except usage.UsageError as e:
            sys.stderr.write(f"downstream: {e} (twistd downstream --help lists the options)\n")
            raise SystemExit(EXIT_CONFIG) from None

    def overrides(self) -> dict[str, Any]:
        return {s.name: self[s.option] for s in SETTINGS if self.get(s.option) is not None}


def config_from_options(options: Options, environ=None) -> Config:
    return load_config(options.get("config"), environ, options.overrides())


class NodeService(DaemonProcess, service.MultiService):
    """Opens the node, then listens and tells systemd it is ready; on stop, stops listening, drains
    requests in flight and the running timer passes (bounded by ``shutdown_timeout``), then closes
    the pool."""

    def __init__(self, config: Config, reactor: Any, environ: dict[str, str] | None = None):
        from downstream_tx.logs import LOG_BUFFER, LogSetup
        from downstream_tx.metrics import Metrics
        from downstream_tx.systemd import Notifier

        super().__init__()
        self.config = config
        self.reactor = reactor
        self.environ = os.environ if environ is None else environ
        self.node = None
        self.server = None
        self.jobs: list = []
        self.leader = None
        self.port = None
        self.site = None
        self.metrics_port = None
        self.ready: defer.Deferred = defer.Deferred()
        self.logging = LogSetup(config.log_format, config.log_file, buffer_bytes=LOG_BUFFER)
        self.log_flusher = None
        from downstream_tx.workers import worker_from_environ

        #: set in a ``--workers`` child: it adopts its parent's listening socket, notifies its parent
        self.worker = worker_from_environ(self.environ)
        if self.worker is not None:
            from downstream_tx.systemd import PipeNotifier

            self.notifier = PipeNotifier(self.worker.status_fd)
        else:
            self.notifier = Notifier(self.environ)
        self.metrics = Metrics(reactor) if config.metrics_listen else None

    def startService(self) -> None:
        super().startService()
        self.reactor.callWhenRunning(self._install_signal_handlers)
        d = defer.ensureDeferred(self._start())
        d.addCallbacks(self.ready.callback, self._fatal)

    async def _start(self) -> Any:
        from downstream_tx.http.ops import metrics_site
        from downstream_tx.http.server import open_site
        from downstream_tx.jobs.history import HourlyResults
        from downstream_tx.jobs.stats import stats_job
        from downstream_tx.jobs.watchdog import Watchdog
        from downstream_tx.listeners import server_endpoint
        from downstream_tx.runtime import Observers, build_server, jobs_leader, open_services
        from downstream_tx.systemd import watchdog_interval

        config, metrics = self.config, self.metrics
        # listeners first, not yet accepting: a port in use (or a bad socket) fails before the
        # database is created or touched; connections wait in the backlog until the node is ready
        self.site = site = open_site(config, self.reactor, metrics)
        self.log_flusher = self.logging.start_flushing(self.reactor)  # the request log's lines, buffered
        if self.worker is None:
            self.port = await server_endpoint(self.reactor, config.listen, self.environ).listen(site)
        else:  # the parent's socket (workers.py); the reactor keeps a copy of the descriptor
            self.port = self.reactor.adoptStreamPort(self.worker.listen_fd, self.worker.family, site)
            os.close(self.worker.listen_fd)
        _pause(self.port)
        if metrics is not None:
            self.metrics_port = await server_endpoint(self.reactor, config.metrics_listen, self.environ).listen(
                metrics_site(metrics))
            _pause(self.metrics_port)
        # the dashboard's per-hour history: the node's results counted here, written by the stats job
        history = HourlyResults(self.reactor)
        observers = Observers(results=(history.count,), downloads=()) if metrics is None else Observers(
            results=(history.count, metrics.count_result), downloads=(metrics.count_download,),
            jobs=metrics.observe_job, transactions=(metrics.observe_transaction,))
        self.node = services = await open_services(config, self.reactor, daemon=True, observers=observers)
        stats = services.stores.stats
        # the periodic jobs run on the one instance holding the jobs lease (jobs/leader.py); the stats
        # job on every process (its gauges and per-hour history are this process's)
        self.leader = leader = jobs_leader(services, observers.jobs)
        self.server = server = build_server(services, leadership=leader.describe, base_url=self._base_url())
        server.serve(site)
        jobs = [stats_job(stats, config, self.reactor, metrics, (services.stores.history, history),
                          observers.jobs)]
        if metrics is not None:
            self._bind_metrics()
            _resume(self.metrics_port)
            log.info("serving Prometheus metrics at http://{address}/metrics",
                     address=_host_port(self.metrics_port.getHost()))
        _resume(self.port)
        self.jobs = jobs
        for job in jobs:
            job.setServiceParent(self)
        leader.setServiceParent(self)
        if self.worker is None:
            log.info("downstream-tx {version} listening on {address} ({db})", version=full_version(),
                     address=_host_port(self.port.getHost()), db=services.db.engine.describe())
        else:
            log.info("worker {index} of {count} ({instance}) serving {address}", index=self.worker.index,
                     count=self.worker.count, instance=leader.holder, address=_host_port(self.port.getHost()))
        self.notifier.ready()
        interval = watchdog_interval(self.environ)
        if interval is not None and self.notifier.enabled:
            watchdog = Watchdog(self.notifier, stats, self.reactor, interval, self.config.db_unhealthy_after)
            watchdog.setServiceParent(self)
        return self.port

    def _base_url(self) -> str | None:
        """Where farmers download chunks: ``public_url``, else the address actually bound (port 0,
        socket activation), not a guess from the endpoint string (None: the configuration's guess)."""
        if self.config.public_url is not None:
            return None
        address = self.port.getHost()
        if not getattr(address, "port", None):
            return None
        tls = self.config.listen.split(":", 1)[0] in ("ssl", "tls")
        return public_url_for(address.host, address.port, tls)

    def _bind_metrics(self) -> None:
        """The metrics read the pool, the lease and the site at each scrape."""
        metrics, services, site = self.metrics, self.node, self.site
        metrics.bind_db(services.db, self.config.db_pool_size)
        metrics.bind_leader(self.leader, None if self.worker is None else self.worker.index)
        metrics.set_pool_targets(self.config.seeded_pool)
        metrics.in_flight.set_function(lambda: len(site.in_flight))
        metrics.connections.set_function(lambda: len(site.channels))
        metrics.connections_stalled.set_function(lambda: len(site.stalled))

    def reload(self) -> None:
        """SIGHUP: reopen the log file (after logrotate), telling systemd around it."""
        self.notifier.reloading()
        self.logging.reopen()
        log.info("SIGHUP: log file reopened")
        self.notifier.ready()

    @defer.inlineCallbacks
    def stopService(self):
        self.notifier.stopping()
        if self.port is not None:
            yield self.port.stopListening()
        in_flight = len(self.site.in_flight) if self.site is not None else 0
        running = [job.name for job in self.jobs + (self.leader.jobs if self.leader is not None else []) if job.busy]
        log.info("stopping: waiting for {requests} requests in flight and {jobs} running timer passes "
                 "(at most {timeout:g}s)", requests=in_flight, jobs=len(running), timeout=self.config.shutdown_timeout)
        waits = [super().stopService()]
        if self.site is not None:
            waits.append(self.site.drained())
        deadline = self.reactor.seconds() + self.config.shutdown_timeout
        finished = yield _within(self.reactor, self.config.shutdown_timeout,
                                 defer.DeferredList(waits, consumeErrors=True))
        if not finished:
            log.warn("stop: {requests} requests still in flight after {timeout:g}s; closing them",
                     requests=len(self.site.in_flight) if self.site is not None else 0,
                     timeout=self.config.shutdown_timeout)
        elif self.site is not None:
            # answers are finished but may sit in socket buffers: close connections gracefully
            yield _within(self.reactor, max(deadline - self.reactor.seconds(), 0.0), self.site.close_connections())
        if self.node is not None:
            self.node.db.close()
        if self.metrics_port is not None:
            yield self.metrics_port.stopListening()
        log.info("stopped")
        if self.log_flusher is not None:
            self.log_flusher.stop()
        self.logging.output.flush_now()



def _pause(port: Any) -> None:
    """Stop accepting connections on a listening port (they wait in the kernel's backlog)."""
    stop = getattr(port, "stopReading", None)
    if stop is not None:
        stop()


def _resume(port: Any) -> None:
    start = getattr(port, "startReading", None)
    if start is not None:
        start()


def _within(clock: Any, seconds: float, d: defer.Deferred) -> defer.Deferred:
    """Fires True when ``d`` fires within ``seconds`` of ``clock``, else False (``d`` runs on)."""
    result: defer.Deferred = defer.Deferred()
    timer = clock.callLater(seconds, lambda: result.called or result.callback(False))

    def done(value: Any) -> Any:
        if timer.active():
            timer.cancel()
        if not result.called:
            result.callback(True)
        return value

    d.addBoth(done)
    return result


def _host_port(address: Any) -> str:
    return f"{getattr(address, 'host', '')}:{getattr(address, 'port', '')}"


def config_or_exit(load) -> Config:
    """Load the configuration, or stop with one line naming the setting (exit status 2)."""
    try:
        return load()
    except ConfigError as e:
        sys.stderr.write(f"downstream: configuration error: {e}\n")
        raise SystemExit(EXIT_CONFIG) from None


def node_service_or_exit(config: Config, reactor: Any) -> NodeService:
    """The node's service, or one line and exit status 1 when its log file cannot be opened."""
    try:
        return NodeService(config, reactor)
    except OSError as e:
        explained = explain(e, config)
        sys.stderr.write(f"downstream: cannot start: log_file: {explained or e}\n")
        raise SystemExit(EXIT_START_FAILED) from None


def child_args(options: Options) -> list[str]:
    """The command line of a ``--workers`` child: ``twistd -n downstream`` with the options given."""
    args = ["-n", "--pidfile=", "downstream"]
    if options.get("config"):
        args += ["--config", options["config"]]
    for s in SETTINGS:
        if options.get(s.option) is not None:
            args += [f"--{s.option}", str(options[s.option])]
    return args


def makeService(options: Options) -> service.IService:
    from twisted.internet import reactor

    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
    return node_or_workers(config_or_exit(lambda: config_from_options(options)), reactor, child_args(options))


def node_or_workers(config: Config, reactor: Any, args: list[str]) -> service.IService:
    """The node's service; with ``workers`` > 1 the parent of that many node processes (started
    as ``twistd`` + ``args``), or one line and exit status 2 when the settings cannot have them;
    in such a worker process, the node with the worker's own settings."""
    from downstream_tx.workers import WorkerSupervisor, refusal, worker_config, worker_from_environ

    worker = worker_from_environ(os.environ)
    if worker is not None:
        config = worker_config(config, worker)
    elif config.workers > 1:
        reason = refusal(config)
        if reason is not None:
            sys.stderr.write(f"downstream: configuration error: {reason}\n")
            raise SystemExit(EXIT_CONFIG)
        return WorkerSupervisor(config, reactor, args)
    return node_service_or_exit(config, reactor)
