"""The v1 part of the contract timer: contracts whose expiration passed end (answered) or fail
(a miss), and the node's own downtime is given back to the live ones first."""

from __future__ import annotations

from typing import Any

from downstream_tx.core.context import Results, drain
from downstream_tx.db.seeded import ExpireResult, SeededStore

#: contracts per page of the expiry pass (one transaction each)
PASS_PAGE = 5000


class V1Expiry:
    def __init__(self, store: SeededStore, clock: Any, late_grace: float, results: Results):
        self.store = store
        self.clock = clock
        #: seconds after its expiration in which a contract's answer still counts (``late_grace``)
        self.late_grace = late_grace
        self.results = results

    async def expire(self) -> ExpireResult:
        """End or fail every v1 contract expired more than ``late_grace`` ago, a page at a time (an
        /answer that arrived before the expiration may still be waiting for its transaction)."""
        now = self.clock.seconds() - self.late_grace
        total = await drain(lambda: self.store.expire(now, PASS_PAGE), ExpireResult())
        self.results.count("miss", total.failed, protocol=1)
        return total

    async def shift_for_downtime(self, window: tuple[float, float]) -> int:
        """Give active v1 contracts the node's downtime ``window`` back (once per window)."""
        return await self.store.shift_for_downtime(window[0], window[1])
