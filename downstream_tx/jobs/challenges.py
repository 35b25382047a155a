"""The contract timer: every ``tick`` seconds, one pass of :meth:`Node.update_challenges` (v0)
followed by :meth:`FarmingV1.expire` (v1).

A pass issues challenge *k* of each contract whose window ``start + k × interval`` has come, counts
an unanswered challenge at its deadline as a miss, fails contracts after ``max_failures``
consecutive misses/fails (their slots free and the files go to the next farmer asking for a chunk)
and tops up files whose unused challenges fell under ``challenge_low_water`` (hashing on a worker
thread). The SQL is set-based over ``contracts (state, protocol, deadline)`` and guarded, so a pass
costs what is due now and two daemons running it at once do no harm.

Downtime rule: farmers cannot answer while the node is down, so the node's own downtime is not
counted against them. Each successful pass stores its time in ``node_meta`` (``last_alive``). The
first pass after a start — and the first successful pass after failed ones (e.g. the database was
unreachable) — sets ``node.forgive = (last successful pass, now)``, the downtime window.

- v0 (fixed grid of windows): a challenge whose deadline fell inside the window, or within one
  interval after its end, is *forgiven* if unanswered (neither a miss nor a pass). The second half
  matters as much as the first: the challenge of the window in progress at the node's return is
  issued late, with only the rest of its window left, and a farmer cannot be blamed for missing it.
  Answers to it count as usual; the contract then gets the challenge of the current window.
- v1 (each contract has its own due time and expiration): the window's length is added to the due
  time and expiration of every active v1 contract that had not expired when the window began, once
  per window (``db/seeded.shift_for_downtime_txn``): each contract gets back, after the return, the
  time it had left when the node went away. This runs before the pass ends expired v1 contracts,
  in the same pass, so no timer can end one on the far side of a downtime first.

The start-up pass also tops up every file that is low on challenges.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger

from downstream_tx.config import Config
from downstream_tx.jobs.periodic import PeriodicJob

log = Logger()

NAME = "challenges"


class ChallengeTimer:
    """The body of one pass, with the little state the downtime rule needs."""

    def __init__(self, node: Any, clock: Any):
        self.node = node
        self.clock = clock
        #: time of the last pass that completed (loaded from ``last_alive`` on the first pass)
        self.last_ok: float | None = None
        #: False until a pass completes, and again after a pass fails
        self.clean = False
        self.started = False

    async def __call__(self) -> dict[str, int]:
        now = self.clock.seconds()
        try:
            return await self._pass(now)
        except Exception:
            self.clean = False
            raise

    async def _pass(self, now: float) -> dict[str, int]:
        first = not self.started
        if first:
            self.last_ok = await self.node.last_alive()
            self.started = True
        shifted = 0
        if not self.clean and self.last_ok is not None and self.last_ok < now:
            self.node.forgive = (self.last_ok, now)
            log.info("no challenge pass ran for {seconds:.1f}s (node down or unhealthy): deadlines in that "
                     "window are not counted as misses", seconds=now - self.last_ok)
            shifted = await self.node.v1.shift_for_downtime(self.node.forgive)
        result = await self.node.update_challenges()
        expired = await self.node.v1.expire()
        topped = await self.node.top_up(None) if first else 0
        await self.node.mark_alive(now)
        self.last_ok = now
        self.clean = True
        summary = {"issued": result.issued, "missed": result.missed, "forgiven": result.forgiven,
                   "failed": result.failed, "starved": result.starved, "topped_up": topped,
                   "v1_ended": expired.ended, "v1_failed": expired.failed, "v1_extended": shifted}
        if any(summary.values()):
            log.info("challenge pass: {issued} issued, {missed} missed, {forgiven} forgiven, {failed} contracts "
                     "failed, {starved} starved, {topped_up} files topped up; v1: {v1_ended} ended, {v1_failed} "
                     "failed, {v1_extended} extended over the downtime", **summary)
        return summary


def challenge_job(node: Any, config: Config, clock: Any) -> PeriodicJob:
    return PeriodicJob(NAME, ChallengeTimer(node, clock), config.tick, clock)
