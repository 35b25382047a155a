"""Leadership of the periodic jobs among instances sharing one database (``db/lease.py``).

Every instance (each ``--workers`` process, each machine) runs a :class:`JobsLeader`: every
``poll`` seconds it renews its lease or tries to take an expired one. While it holds the lease it
runs the jobs, made for each term by ``make_jobs()`` over the stores of the fenced database
(``db/lease.py``, built once), which it gives the term's fence, so that their every transaction
checks it; when it loses the lease (another instance took it, or it could not renew it before it
expired) it stops them, and the fenced database refuses any transaction still asked for. A clean
stop releases the lease, so another instance takes over at its next check instead of after
``lease_ttl``.

A new term starts with new job objects (over the same services), so the contract timer's first
pass applies the downtime rule from the last pass *any* instance completed (``node_meta.last_alive``)
to now: the window in which no instance ran the jobs, and nothing else, is not held against
farmers; and the uptime summary's first looks back to the last summary any instance made.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any

from twisted.application import service
from twisted.internet import defer, task
from twisted.logger import Logger
from twisted.python.failure import Failure

from downstream_tx.db.lease import JOBS, Fence, FencedDatabase, LeaseState, LeaseStore
from downstream_tx.jobs.periodic import PeriodicJob

log = Logger()


def default_instance_name() -> str:
    """``host:pid``: unique among the processes sharing a database, readable in logs and metrics."""
    return f"{socket.gethostname()}:{os.getpid()}"


def poll_interval(ttl: float, tick: float) -> float:
    """Seconds between lease checks: a third of the TTL (a leader renews twice before it could
    expire), and at most one tick, so a follower takes a dead leader's lease within TTL + one tick."""
    poll = ttl / 3
    if tick > 0:
        poll = min(poll, tick)
    return max(poll, 0.01)


class JobsLeader(service.MultiService):
    name = "jobs-leader"

    def __init__(self, leases: LeaseStore, fenced: FencedDatabase, make_jobs: Callable[[], list[PeriodicJob]],
                 clock: Any, holder: str, ttl: float, poll: float):
        super().__init__()
        self.leases = leases
        #: the database handle the jobs' stores use: it checks the fence of the term held now
        self.fenced = fenced
        self.make_jobs = make_jobs
        self.clock = clock
        self.holder = holder
        self.ttl = ttl
        self.poll = poll
        #: the jobs of the current term (empty while a follower)
        self.jobs: list[PeriodicJob] = []
        #: the generation this instance holds, None while a follower
        self.generation: int | None = None
        #: the lease as last seen (any holder), and when
        self.last: LeaseState | None = None
        self.last_seen: float | None = None
        self.terms = 0
        self._loop: task.LoopingCall | None = None
        self._checking: defer.Deferred | None = None
        self._warned = False

    # --- what /health and /metrics show ------------------------------------------------------

    @property
    def role(self) -> str:
        return "leader" if self.generation is not None else "follower"

    def describe(self) -> dict[str, Any]:
        """The instance's role and the lease as it last saw it (``age``: seconds since its holder
        last renewed it; a live leader renews every ``poll`` seconds)."""
        now = self.clock.seconds()
        body: dict[str, Any] = {"role": self.role, "instance": self.holder}
        last = self.last
        if last is None:
            body["lease"] = None
        else:
            body["lease"] = {"holder": last.holder or None, "generation": last.generation,
                             "age": round(max(now - last.renewed, 0.0), 3),
                             "held_for": round(max(now - last.acquired, 0.0), 3) if last.holder else None,
                             "expires_in": round(last.expires - now, 3), "checked_ago":
                             round(now - self.last_seen, 3) if self.last_seen is not None else None}
        return body

    # --- the loop --------------------------------------------------------------------------------

    def startService(self) -> None:
        service.Service.startService(self)  # the jobs start when a term starts, not with us
        self._loop = task.LoopingCall(self._tick)
        self._loop.clock = self.clock
        self._loop.start(self.poll, now=True)

    def _tick(self) -> defer.Deferred:
        d = defer.ensureDeferred(self.check())
        self._checking = d

        def done(result: Any) -> None:
            self._checking = None
            if isinstance(result, Failure):
                log.failure("jobs lease check failed", result)

        d.addBoth(done)
        return d

    async def check(self) -> LeaseState | None:
        """One lease check: renew or take the lease and start a term, or step down."""
        now = self.clock.seconds()
        try:
            state = await self.leases.acquire(JOBS, self.holder, now, self.ttl)
        except Exception as e:
            if not self._warned:
                self._warned = True
                log.warn("cannot renew or take the jobs lease ({error})", error=str(e) or e.__class__.__name__)
            if self.generation is not None and self.last is not None and self.clock.seconds() >= self.last.expires:
                await self.step_down("its lease expired while the database did not answer")
            return None
        self._warned = False
        if not self.running:
            return state
        self.last, self.last_seen = state, self.clock.seconds()
        if state.leader:
            if state.generation != self.generation:
                if self.generation is not None:
                    await self.step_down(f"its lease expired before it was renewed (generation {self.generation})")
                self._start_term(state)
        elif self.generation is not None:
            await self.step_down(f"instance {state.holder} holds the lease now (generation {state.generation})")
        return state

    def _start_term(self, state: LeaseState) -> None:
        self.generation = state.generation
        self.terms += 1
        log.info("this instance ({holder}) runs the periodic jobs now (lease generation {generation}, "
                 "ttl {ttl:g}s)", holder=self.holder, generation=state.generation, ttl=self.ttl)
        self.fenced.hold(Fence(JOBS, self.holder, state.generation))
        self.jobs = self.make_jobs()
        for job in self.jobs:
            job.setServiceParent(self)

    async def step_down(self, reason: str) -> None:
        """Stop this term's jobs (waiting for running passes: their transactions are fenced)."""
        jobs, generation = self.jobs, self.generation
        self.jobs, self.generation = [], None
        if generation is None:
            return
        log.info("this instance ({holder}) stops running the periodic jobs: {reason}", holder=self.holder,
                 reason=reason)
        for job in jobs:
            await defer.maybeDeferred(job.disownServiceParent)
        if self.generation is None:  # (not a new term started meanwhile)
            self.fenced.release()

    @defer.inlineCallbacks
    def stopService(self):
        service.Service.stopService(self)
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        if self._checking is not None:
            yield self._checking
        generation = self.generation
        yield defer.ensureDeferred(self.step_down("the node is stopping"))
        if generation is not None:
            try:
                released = yield self.leases.release(JOBS, self.holder, generation)
            except Exception as e:
                log.warn("could not release the jobs lease ({error}); another instance takes it when it expires",
                         error=str(e) or e.__class__.__name__)
            else:
                if released:
                    log.info("jobs lease released (generation {generation})", generation=generation)
