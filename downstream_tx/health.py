"""Is the database answering? One bounded ping, shared by ``GET /health`` and the watchdog."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer
from twisted.python.failure import Failure

from downstream_tx.db.stats import StatsStore


@dataclass(frozen=True)
class Ping:
    ok: bool
    seconds: float
    #: "ok", "timeout" or the error's class name
    detail: str


def ping_database(stats: StatsStore, clock: Any, timeout: float) -> defer.Deferred:
    """Fires with a :class:`Ping` after at most ``timeout`` seconds of ``clock``.

    A ping that times out is not cancelled (a pool thread may be stuck in a driver call); its late
    result is ignored.
    """
    started = time.monotonic()
    result: defer.Deferred = defer.Deferred()

    def finish(ping: Ping) -> None:
        if not result.called:
            result.callback(ping)

    timer = clock.callLater(timeout, finish, Ping(False, timeout, "timeout"))

    def answered(value: Any) -> None:
        if timer.active():
            timer.cancel()
        if isinstance(value, Failure):
            finish(Ping(False, time.monotonic() - started, value.type.__name__))
        else:
            finish(Ping(True, time.monotonic() - started, "ok"))

    defer.maybeDeferred(stats.ping).addBoth(answered)
    return result
