"""Farmers as the operator sees them (``downstream-admin``): a farmer's standing, deleting a
token, the address whitelist."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from twisted.logger import Logger

from downstream_tx import bitcoin
from downstream_tx.core.tokens import FARMER_ID_RE, hash_token, is_token
from downstream_tx.db.farmers import FarmerStore, FarmerSummary
from downstream_tx.db.tokens import TokenStore, UnknownToken
from downstream_tx.errors import INVALID, NOT_FOUND, NodeError

log = Logger()


class Farmers:
    def __init__(self, store: FarmerStore, tokens: TokenStore, clock: Any):
        self.store = store
        self.tokens = tokens
        self.clock = clock

    async def show(self, farmer_id: str) -> dict:
        """A farmer's address, heartbeats and contract counts over all its tokens."""
        farmer_id = farmer_id.lower()
        if not FARMER_ID_RE.match(farmer_id):
            raise NodeError(INVALID, "invalid_farmer_id", "farmer id must be 20 hexadecimal characters")
        found = await self.tokens.farmer(farmer_id)
        if found is None:
            raise NodeError(NOT_FOUND, "no_farmer", "unknown farmer id")
        rows, summary = found
        first = rows[0]
        return {"farmer_id": farmer_id, "address": first.address, "created": first.created,
                "heartbeats": sum(r.hbcount for r in rows), "contracts": summary}

    async def page(self, after_id: int = 0, limit: int = 500) -> list[FarmerSummary]:
        """A page of live farmers (``downstream-admin farmer list``), oldest first: pass the last
        row's ``id`` as ``after_id`` for the next page."""
        return await self.store.list(after_id, limit)

    async def summaries(self, farmer_ids: list[str]) -> list[FarmerSummary]:
        """Protocol, totals, last seen and online of each token among ``farmer_ids``."""
        return await self.store.by_farmer_ids(farmer_ids)

    async def ids_by_address(self, address: str) -> list[str]:
        """The farmer ids of every token (live or deleted) of an address, oldest first."""
        return await self.store.ids_by_address(address)

    async def delete_token(self, token: str) -> int:
        """Delete a token; its active contracts end and their files return to the pool."""
        if not is_token(token):
            raise NodeError(INVALID, "invalid_token", "token must be 32 hexadecimal characters")
        try:
            row, ended = await self.tokens.delete(hash_token(token), self.clock.seconds())
        except UnknownToken:
            raise NodeError(NOT_FOUND, "no_token", "unknown token") from None
        log.info("token of farmer {farmer_id} deleted, {ended} contracts ended", farmer_id=row.farmer_id,
                 ended=ended)
        return ended

    async def import_whitelist(self, rows: Iterable[tuple[str, int]], replace: bool = False) -> dict[str, int]:
        checked = []
        for line, (address, balance) in enumerate(rows, 1):
            try:
                bitcoin.decode_address(address)
            except bitcoin.InvalidAddress as e:
                raise NodeError(INVALID, "invalid_address", f"row {line}: {e}") from None
            if not isinstance(balance, int) or balance < 0:
                raise NodeError(INVALID, "invalid_balance", f"row {line}: balance must be a whole number >= 0")
            checked.append((address, balance))
        return await self.tokens.import_whitelist(checked, replace, self.clock.seconds())
