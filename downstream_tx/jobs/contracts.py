"""The contract timer: every ``tick`` seconds, one pass over the contracts whose time has come,
under the downtime rule (docs/protocol-v0.md "Timing", docs/protocol-v1.md "Expiry").

A pass: v0 issues the challenge of each contract whose window ``start + k × interval`` has come,
counts an unanswered challenge at its deadline as a miss, fails contracts after ``max_failures``
consecutive misses or fails, and tops up files whose unused challenges ran low; v1 ends or fails
contracts whose expiration passed. The SQL is set-based over ``contracts (state, protocol,
deadline)`` and guarded, so a pass costs what is due now and two runners at once do no harm.

Downtime rule: farmers cannot answer while the node is down, so the node's own downtime is not
counted against them. Each completed pass stores its time (``last_alive``). The first pass after a
start, and the first completed pass after failed ones (e.g. the database was unreachable), takes
the window from that stored time to now as downtime: v0 forgives a challenge whose deadline fell in
it, or within one interval after it (it was issued late, or its window cut short); v1 contracts get
the window added to their due time and expiration, once, before any of them is expired.

Each contract a pass fails is logged by its ids (farmer id, file hash; never a token), at most
``FAILED_LINES`` per pass.
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.logger import Logger

from downstream_tx.db.farmers import FarmerStore
from downstream_tx.db.meta import MetaStore
from downstream_tx.v0.challenges import ChallengeSupply
from downstream_tx.v1.expiry import V1Expiry

log = Logger()

NAME = "contracts"

#: failed contracts named one per log line in a pass; the rest are counted in one more line
FAILED_LINES = 20


@dataclass
class PassSummary:
    """What one pass changed (the job logs the non-zero counts as one line)."""

    issued: int = 0
    missed: int = 0
    forgiven: int = 0
    failed: int = 0
    starved: int = 0
    topped_up: int = 0
    v1_ended: int = 0
    v1_failed: int = 0
    #: v1 contracts given the downtime back
    v1_extended: int = 0
    #: seconds of downtime this pass applied the rule to
    downtime: float = 0.0
    #: missed challenges asked again in containment (v0, v1): not misses yet
    contained: int = 0
    v1_contained: int = 0

    def describe(self) -> str:
        """One line for the log (after ``timer contracts:``), "" for a run that changed nothing."""
        counts = (self.issued, self.missed, self.forgiven, self.failed, self.starved, self.topped_up,
                  self.v1_ended, self.v1_failed, self.v1_extended, self.contained, self.v1_contained)
        if not any(counts) and not self.downtime:
            return ""
        line = (f"{self.issued} issued, {self.missed} missed, {self.contained} asked again in containment, "
                f"{self.forgiven} forgiven, {self.failed} contracts failed, {self.starved} starved, "
                f"{self.topped_up} files topped up; v1: {self.v1_ended} ended, {self.v1_failed} failed, "
                f"{self.v1_contained} asked again in containment, {self.v1_extended} extended over the downtime")
        if self.downtime:
            line += (f" (no timer run for {self.downtime:.1f}s (node down or unhealthy): deadlines in that window "
                     "are not counted as misses)")
        return line


class ContractTimer:
    """The body of one pass, with the little state the downtime rule needs."""

    def __init__(self, supply: ChallengeSupply, expiry: V1Expiry, meta: MetaStore, clock,
                 farmers: FarmerStore | None = None):
        self.supply = supply
        self.expiry = expiry
        self.meta = meta
        self.clock = clock
        #: looks up the farmer and file of failed contracts (None: failed contracts are only counted)
        self.farmers = farmers
        #: time of the last pass that completed (loaded from ``last_alive`` on the first pass)
        self.last_ok: float | None = None
        #: False until a pass completes, and again after a pass fails
        self.clean = False
        self.started = False
        #: the last downtime window seen: its rule holds for deadlines up to an interval after it
        self.downtime: tuple[float, float] | None = None

    async def __call__(self) -> PassSummary:
        now = self.clock.seconds()
        try:
            return await self._pass(now)
        except Exception:
            self.clean = False
            raise

    async def _pass(self, now: float) -> PassSummary:
        first = not self.started
        if first:
            self.last_ok = await self.meta.last_alive()
            self.started = True
        summary = PassSummary()
        if not self.clean and self.last_ok is not None and self.last_ok < now:
            self.downtime = (self.last_ok, now)
            summary.downtime = now - self.last_ok
            summary.v1_extended = await self.expiry.shift_for_downtime(self.downtime)
        v0 = await self.supply.issue_due(forgive=self.downtime)
        expired = await self.expiry.expire()
        summary.issued, summary.missed, summary.forgiven = v0.issued, v0.missed, v0.forgiven
        summary.failed, summary.starved, summary.contained = v0.failed, v0.starved, v0.contained
        summary.v1_ended, summary.v1_failed, summary.v1_contained = expired.ended, expired.failed, expired.contained
        if first:
            summary.topped_up = await self.supply.top_up(None)
        await self.meta.mark_alive(now)
        self.last_ok = now
        self.clean = True
        await self._log_failed(v0.failed_ids, expired.failed_ids)
        return summary

    async def _log_failed(self, v0_ids: list[int], v1_ids: list[int]) -> None:
        """One line per failed contract naming the farmer id and the file hash (ids, never tokens),
        at most ``FAILED_LINES`` per pass; the rest in one more line. A failed look-up is logged and
        does not fail the pass (its changes are made)."""
        failed = v0_ids + v1_ids
        if not failed or self.farmers is None:
            return
        why = {0: f"{self.supply.config.max_failures} consecutive misses or fails",
               1: "challenge not answered before it was due"}
        try:
            rows = await self.farmers.failed_contracts(failed[:FAILED_LINES])
        except Exception:
            log.failure("could not look up the {n} failed contracts", n=len(failed))
            return
        rows.sort(key=lambda row: row.protocol)  # v0 first, as counted
        for row in rows:
            log.info("contract {contract_id} failed ({why}): farmer {farmer_id}, file {file_hash} (v{protocol})",
                     contract_id=row.contract_id, why=why.get(row.protocol, "failed"), farmer_id=row.farmer_id,
                     file_hash=row.file_hash, protocol=row.protocol)
        if len(failed) > FAILED_LINES:
            log.info("… and {more} more contracts failed in this pass", more=len(failed) - FAILED_LINES)
