"""The twistd plugin's Options and service: ``twistd -n downstream [options]``."""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from twisted.application import service
from twisted.internet import defer, endpoints
from twisted.logger import Logger
from twisted.python import usage

from downstream_tx import __version__
from downstream_tx.config import SETTINGS, Config, ConfigError, load_config, public_url_for

log = Logger()


class Options(usage.Options):
    synopsis = "[--config FILE] [--listen ENDPOINT] [--db URL] [--data-dir DIR] [options]"
    longdesc = ("Run a downstream-tx proof-of-storage node. Every option is also a TOML key in --config "
                "and a DOWNSTREAM_* environment variable; precedence: defaults < file < environment < "
                "command line.")
    optParameters = [["config", "c", None, "TOML configuration file."]] + [
        [s.option, None, None, f"{s.help} [env {s.env}]"] for s in SETTINGS
    ]

    def opt_version(self) -> None:
        print(f"downstream-tx {__version__}")
        sys.exit(0)

    def overrides(self) -> dict[str, Any]:
        return {s.name: self[s.option] for s in SETTINGS if self.get(s.option) is not None}


def config_from_options(options: Options, environ=None) -> Config:
    return load_config(options.get("config"), environ, options.overrides())


class NodeService(service.MultiService):
    """Opens the node, then listens; stops listening, then drains jobs and closes the pool."""

    def __init__(self, config: Config, reactor: Any):
        super().__init__()
        self.config = config
        self.reactor = reactor
        self.node = None
        self.port = None
        self.ready: defer.Deferred = defer.Deferred()

    def startService(self) -> None:
        super().startService()
        self.reactor.callWhenRunning(self._install_signal_handlers)
        d = defer.ensureDeferred(self._start())
        d.addCallbacks(self.ready.callback, self._fatal)

    async def _start(self) -> Any:
        from downstream_tx.api import make_resource
        from downstream_tx.api.site import DownstreamSite
        from downstream_tx.jobs import build_jobs
        from downstream_tx.runtime import open_node

        self.node = await open_node(self.config, self.reactor)
        site = DownstreamSite(make_resource(self.node, self.config), max_body_size=self.config.max_body_size)
        endpoint = endpoints.serverFromString(self.reactor, self.config.listen)
        self.port = await endpoint.listen(site)
        if self.config.public_url is None:
            # download URLs name the address actually bound (port 0, socket activation), not a guess
            # from the endpoint string; nothing has been served yet (no reactor turn since listen)
            address = self.port.getHost()
            if getattr(address, "port", None):
                tls = self.config.listen.split(":", 1)[0] in ("ssl", "tls")
                self.config = self.config.replace(public_url=public_url_for(address.host, address.port, tls))
                site.resource = make_resource(self.node, self.config)
        for job in build_jobs(self.node, self.config, self.reactor):
            job.setServiceParent(self)
        address = self.port.getHost()
        log.info("downstream-tx {version} listening on {address} ({db})", version=__version__,
                 address=f"{getattr(address, 'host', '')}:{getattr(address, 'port', '')}",
                 db=self.node.db.engine.describe())
        return self.port

    def _install_signal_handlers(self) -> None:
        """SIGTERM is the normal way to stop (systemd): a clean stop with exit status 0, where the
        reactor's own handler would re-raise the signal after shutdown."""
        signal.signal(signal.SIGTERM, lambda signum, frame: self.reactor.callFromThread(self.reactor.stop))

    def _fatal(self, failure) -> None:
        from downstream_tx.db.schema import SchemaError

        if failure.check(SchemaError, ConfigError, ValueError, OSError):
            log.critical("cannot start: {reason}", reason=str(failure.value))
        else:
            log.failure("cannot start", failure)
        self.reactor.addSystemEventTrigger("after", "shutdown", os._exit, 1)
        if self.reactor.running:
            self.reactor.stop()
        else:
            self.reactor.callWhenRunning(self.reactor.stop)

    @defer.inlineCallbacks
    def stopService(self):
        if self.port is not None:
            yield self.port.stopListening()
        yield super().stopService()
        if self.node is not None:
            self.node.db.close()


def config_or_exit(load) -> Config:
    """Load the configuration, or stop with one line naming the setting (exit status 2)."""
    try:
        return load()
    except ConfigError as e:
        sys.stderr.write(f"downstream: configuration error: {e}\n")
        raise SystemExit(2) from None


def makeService(options: Options) -> service.IService:
    from twisted.internet import reactor

    return NodeService(config_or_exit(lambda: config_from_options(options)), reactor)
