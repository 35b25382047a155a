"""A periodic job that cannot die, cannot overlap itself, and drains on stop."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Callable
from typing import Any

from twisted.application import service
from twisted.internet import defer, task
from twisted.logger import Logger

from downstream_tx.db.database import DatabaseUnavailable
from downstream_tx.db.lease import LeaseLost

log = Logger()


def summarize(result: Any) -> str:
    """What a pass changed, in words: the result's own ``describe()``, else ``issued=3 missed=1``
    from a dataclass or dict of counts; "" when nothing happened, so idle passes do not log."""
    describe = getattr(result, "describe", None)
    if callable(describe):
        return describe()
    if dataclasses.is_dataclass(result) and not isinstance(result, type):
        items = [(f.name, getattr(result, f.name)) for f in dataclasses.fields(result)]
    elif isinstance(result, dict):
        items = list(result.items())
    else:
        return ""
    return " ".join(f"{k}={v}" for k, v in items
                    if isinstance(v, (int, float)) and not isinstance(v, bool) and v)


class PeriodicJob(service.Service):
    """Run ``func()`` every ``interval`` seconds of ``clock``.

    LoopingCall waits for the Deferred a call returns before scheduling the next, so a pass never
    overlaps itself; errors are caught and logged here, because a LoopingCall stops on the first
    exception it sees. ``stopService`` waits for a running pass to finish.
    """

    def __init__(self, name: str, func: Callable[[], Awaitable[Any]], interval: float, clock: Any,
                 observer: Callable[[str, float, bool], None] | None = None):
        self.setName(name)
        self.func = func
        self.interval = interval
        self.clock = clock
        self.observer = observer
        self.runs = 0
        self.failures = 0
        self.last_result: Any = None
        self._loop: task.LoopingCall | None = None
        self._current: defer.Deferred | None = None

    @property
    def busy(self) -> bool:
        """A pass is running now."""
        return self._current is not None

    def startService(self) -> None:
        super().startService()
        self._loop = task.LoopingCall(self._run_once)
        self._loop.clock = self.clock
        self._loop.start(self.interval, now=True)

    def _run_once(self) -> defer.Deferred:
        started = time.monotonic()
        d = defer.ensureDeferred(self._call())
        self._current = d

        def done(result: Any) -> None:
            self._current = None
            ok = not isinstance(result, Exception)
            elapsed = time.monotonic() - started
            summary = summarize(result) if ok else ""
            if summary:
                log.info("timer {job}: {summary} ({ms:.0f} ms)", job=self.name, summary=summary, ms=elapsed * 1000)
            if elapsed > self.interval:
                log.warn("timer {job} took {seconds:.1f}s, longer than its {interval:g}s interval",
                         job=self.name, seconds=elapsed, interval=self.interval)
            self.runs += 1
            if ok:
                self.last_result = result
            else:
                self.failures += 1
            if self.observer is not None:
                self.observer(self.name, elapsed, ok)

        d.addBoth(done)
        return d

    async def _call(self) -> Any:
        try:
            return await self.func()
        except LeaseLost as e:
            # another instance runs the jobs now (jobs/leader.py stops this one at its next check):
            # the pass's transaction was rolled back, one line, no traceback
            log.warn("periodic job {job} stopped: {reason}; its transaction changed nothing", job=self.name,
                     reason=str(e))
            return e
        except DatabaseUnavailable as e:
            # expected while the database is away (every tick): one line, no traceback
            log.warn("periodic job {job} skipped: {reason}", job=self.name, reason=str(e))
            return e
        except Exception as e:
            log.failure("periodic job {job} failed", job=self.name)
            return e

    def run_now(self) -> defer.Deferred:
        """Run one pass outside the schedule (tests, admin); waits for a running pass first."""
        if self._current is not None:
            return self._current.addCallback(lambda _: self._run_once())
        return self._run_once()

    def stopService(self) -> defer.Deferred | None:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        current = self._current
        if current is not None:
            waiter: defer.Deferred = defer.Deferred()
            current.addBoth(lambda r: (waiter.callback(None), r)[1])
            return waiter
        return None
