"""The whole farmer: every node at once, ``--number``, and the one stop (SIGTERM, Ctrl-C, the number
of answers reached, or no node left to farm) that lets answers under way finish, then saves."""

from __future__ import annotations

import random
from dataclasses import replace

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from .client import HttpClient
from .files import History, Identities
from .node import Blocking, NodeFarmer
from .settings import Settings, SettingsError
from .v0 import V0Session
from .v1 import V1Session

log = Logger()


class Farm:
    def __init__(self, settings: Settings, http: HttpClient, clock: IReactorTime, blocking: Blocking,
                 rng: random.Random | None = None):
        """Raises ``FarmerFileError`` (history or identity file) or :class:`SettingsError`."""
        self.settings = settings
        self.clock = clock
        self.started = clock.seconds()
        self.history = History.load(settings.history)
        self.identities = Identities.load(settings.identity)
        nodes = settings.nodes
        if not settings.explicit_nodes:
            last = self.history.last_node
            if last is None:
                raise SettingsError("give a node URL (no node is named in the config, and the history file "
                                    f"{settings.history} has no last node)")
            nodes = (replace(nodes[0], url=last),)
        kinds = {"v0": V0Session, "v1": V1Session}
        self.nodes = [NodeFarmer(n, settings, http, clock, blocking, self.history, self.identities, kinds,
                                 self._passed, rng) for n in nodes]
        self.passed = 0
        self.exit_code = 0
        #: fires (with the exit status) once the farmer has stopped
        self.done: defer.Deferred = defer.Deferred()
        self._stopping: defer.Deferred | None = None
        self._runs: list[defer.Deferred] = []

    def start(self) -> None:
        log.info("downstream-farmer farming {n} node(s): {urls}", n=len(self.nodes),
                 urls=", ".join(n.url for n in self.nodes))
        for node in self.nodes:
            self._runs.append(defer.ensureDeferred(node.run()))
            node.finished.addCallback(lambda _: self._check_nodes())

    def _passed(self, n: int) -> None:
        self.passed += n
        number = self.settings.number
        if number is not None and self.passed >= number and self._stopping is None:
            log.info("{n} challenges answered, as many as --number asked: stopping", n=self.passed)
            self.stop()

    def _check_nodes(self) -> None:
        if self._stopping is None and all(n.state == "failed" for n in self.nodes):
            log.error("no node left to farm with: stopping")
            self.exit_code = 1
            self.stop()

    def stop(self) -> defer.Deferred:
        """Stop farming (once; later calls get the same Deferred): answers under way get
        ``stop_timeout`` seconds, then every node's contracts are saved."""
        if self._stopping is None:
            self._stopping = defer.ensureDeferred(self._stop())
        return self._stopping

    async def _stop(self) -> None:
        for run in self._runs:
            run.cancel()  # a node still connecting stops at once
        timeout = self.settings.stop_timeout
        await defer.gatherResults([defer.ensureDeferred(n.stop(timeout)) for n in self.nodes], consumeErrors=True)
        log.info("downstream-farmer stopped: {passed} challenges answered since the start", passed=self.passed)
        self.done.callback(self.exit_code)
