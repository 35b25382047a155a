"""The status API's data (docs/protocol-v1.md, "Status"): farmers listed and shown (their uptime
summed by the uptime job, ``jobs/uptime.py``)."""

from __future__ import annotations

from typing import Any

from downstream_tx.core.reputation import standing
from downstream_tx.core.tokens import FARMER_ID_RE
from downstream_tx.db.reputation import ReputationStore
from downstream_tx.db.status import SORT_COLUMNS, FarmerRow, StatusStore
from downstream_tx.domain.online import seen_online
from downstream_tx.errors import NOT_FOUND
from downstream_tx.geoip import location_from_json
from downstream_tx.times import iso_utc
from downstream_tx.v1.wire import MSG_INVALID_SORT, NONEXISTENT_FARMER, v1_error

#: farmers in a /status/list page without a limit, and the most a limit gets (a larger one is cut to
#: it): an answer's size, and what a client that pipelines lists and never reads makes the node hold
DEFAULT_PAGE, MAX_PAGE = 100, 1000
#: the largest offset the list passes to the database
MAX_OFFSET = 1 << 62


def farmer_dict(row: FarmerRow, reputation: dict[str, Any] | None = None) -> dict[str, Any]:
    """The original's fields, then (added here) the standing of the farmer's address:
    ``audit_score``, ``online_score``, ``unknown_score``, ``reputation`` (ok, suspended,
    offline or disqualified), ``vetted``, ``contained``, ``audits``, ``last_seen`` and ``seen_online``
    (docs/protocol-v1.md, "Status")."""
    return {"id": row.farmer_id, "address": row.address, "location": location_from_json(row.location),
            "uptime": round(row.uptime * 100, 2), "heartbeats": row.heartbeats, "contracts": row.contracts,
            "size": row.size, "online": row.online, "last_due": iso_utc(row.last_due), **(reputation or {})}


class Status:
    def __init__(self, store: StatusStore, reputation: ReputationStore, clock: Any, vetting_audits: int):
        self.store = store
        self.reputation = reputation
        self.clock = clock
        self.vetting_audits = vetting_audits

    async def farmers(self, online: bool = False, sort: str = "id", descending: bool = False,
                      limit: int | None = None, page: int | None = None) -> list[dict[str, Any]]:
        if sort not in SORT_COLUMNS:
            raise v1_error(MSG_INVALID_SORT)
        limit = DEFAULT_PAGE if limit is None else min(limit, MAX_PAGE)
        offset = min(limit * (page or 0), MAX_OFFSET)
        rows = await self.store.farmers(self.clock.seconds(), online, sort, descending, limit, offset)
        reputation = await self._reputation([r.address for r in rows])
        return [farmer_dict(r, reputation[r.address]) for r in rows]

    async def _reputation(self, addresses: list[str]) -> dict[str, dict[str, Any]]:
        wanted = sorted(set(addresses))
        found = await self.reputation.of_addresses(wanted) if wanted else {}
        now, rules = self.clock.seconds(), self.reputation.rules.online
        seen = {a: found[a].last_seen if a in found else None for a in wanted}
        return {a: {**standing(found.get(a), self.vetting_audits), "last_seen": iso_utc(seen[a]),
                    "seen_online": seen_online(seen[a], now, rules)} for a in wanted}

    async def farmer(self, farmer_id: str) -> dict[str, Any]:
        farmer_id = farmer_id.lower()
        if not FARMER_ID_RE.match(farmer_id):
            raise v1_error(NONEXISTENT_FARMER, NOT_FOUND)
        row = await self.store.farmer(farmer_id, self.clock.seconds())
        if row is None:
            raise v1_error(NONEXISTENT_FARMER, NOT_FOUND)
        return farmer_dict(row, (await self._reputation([row.address]))[row.address])
