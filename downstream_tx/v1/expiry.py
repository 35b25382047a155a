"""The v1 part of the contract timer: contracts whose expiration passed end (answered) or fail
(a miss), and the node's own downtime is given back to the live ones first."""

from __future__ import annotations

from downstream_tx.core.context import Core, drain
from downstream_tx.db.seeded import ExpireResult

#: contracts per page of the expiry pass (one transaction each)
PASS_PAGE = 5000


class V1Expiry:
    def __init__(self, core: Core):
        self.core = core

    async def expire(self) -> ExpireResult:
        """End or fail every v1 contract expired more than ``late_grace`` ago, a page at a time (an
        /answer that arrived before the expiration may still be waiting for its transaction)."""
        now = self.core.now() - self.core.config.late_grace
        total = await drain(lambda: self.core.stores.seeded.expire(now, PASS_PAGE), ExpireResult())
        self.core.results.count("miss", total.failed, protocol=1)
        return total

    async def shift_for_downtime(self, window: tuple[float, float]) -> int:
        """Give active v1 contracts the node's downtime ``window`` back (once per window)."""
        return await self.core.stores.seeded.shift_for_downtime(window[0], window[1])
