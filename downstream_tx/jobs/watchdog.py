"""The systemd watchdog: ``WATCHDOG=1`` while the reactor turns and the database answers."""

from __future__ import annotations

from typing import Any

from twisted.application import service
from twisted.internet import task
from twisted.logger import Logger

from downstream_tx.health import Ping, ping_database

log = Logger()


class Watchdog(service.Service):
    """Every ``interval`` seconds: ping systemd unless the database has not answered for longer than
    ``unhealthy_after`` seconds, and start a new database ping if none is pending.

    The pings come from a timer on the reactor, so a blocked reactor stops them too. When the
    database has been unreachable past the limit, systemd's ``WatchdogSec`` runs out and it restarts
    the node (``Restart=on-failure``).
    """

    name = "watchdog"

    def __init__(self, notifier: Any, stats: Any, clock: Any, interval: float, unhealthy_after: float,
                 ping_timeout: float | None = None):
        self.notifier = notifier
        #: the stats store: its ``ping`` and its database's ``last_success``
        self.stats = stats
        self.clock = clock
        self.interval = interval
        self.unhealthy_after = unhealthy_after
        self.ping_timeout = ping_timeout if ping_timeout is not None else max(interval, 1.0)
        self.last_answer = clock.seconds()
        self.pings_sent = 0
        self._checking = False
        self._withheld = False
        self._loop: task.LoopingCall | None = None

    def startService(self) -> None:
        super().startService()
        self.last_answer = self.clock.seconds()
        self._loop = task.LoopingCall(self.tick)
        self._loop.clock = self.clock
        self._loop.start(self.interval, now=True)

    def stopService(self) -> None:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    def tick(self) -> None:
        if not self._checking:
            self._checking = True
            ping_database(self.stats, self.clock, self.ping_timeout).addCallback(self._answered)
        last = max(self.last_answer, getattr(self.stats.db, "last_success", None) or 0.0)
        down_for = self.clock.seconds() - last
        if down_for <= self.unhealthy_after:
            if self._withheld:
                self._withheld = False
                log.info("database answers again; watchdog pings resume")
            self.notifier.watchdog()
            self.pings_sent += 1
        elif not self._withheld:
            self._withheld = True
            log.critical("database unreachable for {seconds:.0f}s (db_unhealthy_after={limit:g}s): no more "
                         "watchdog pings, systemd will restart the node", seconds=down_for, limit=self.unhealthy_after)

    def _answered(self, ping: Ping) -> None:
        self._checking = False
        if ping.ok:
            self.last_answer = self.clock.seconds()
        else:
            log.warn("database ping failed ({detail})", detail=ping.detail)
