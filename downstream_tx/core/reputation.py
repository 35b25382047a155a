"""Farmer reputation as the services see it (docs/operations.md, "Reputation"): the rules from the
configuration, a farmer's standing for display, the reputation job, the operator's reinstatement."""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger

from downstream_tx.config import Config
from downstream_tx.db.reputation import NotEligible, Reputation, Rules, SweepResult
from downstream_tx.errors import FORBIDDEN, NOT_FOUND, NodeError

log = Logger()


def rules_of(config: Config) -> Rules:
    return Rules(dq_threshold=config.dq_threshold, suspension_threshold=config.suspension_threshold,
                 suspension_grace=float(config.suspension_grace), containment_retries=config.containment_retries,
                 vetting_audits=config.vetting_audits, vetting_share=config.vetting_share)


def refusal(e: NotEligible) -> NodeError:
    """Why a farmer gets no new contract, as the API says it (403, ``status`` = the reason)."""
    return NodeError(FORBIDDEN, e.reason, e.message)


def standing(rep: Reputation | None, vetting_audits: int) -> dict[str, Any]:
    """The reputation fields shown for a farmer (admin, status API): scores rounded to 6 places."""
    if rep is None:
        return {"audit_score": 1.0, "online_score": 1.0, "unknown_score": 1.0, "reputation": "ok",
                "vetted": False, "contained": 0, "audits": {"passes": 0, "fails": 0, "misses": 0, "retries": 0,
                                                             "errors": 0}}
    return {"audit_score": round(rep.audit_score, 6), "online_score": round(rep.online_score, 6),
            "unknown_score": round(rep.unknown_score, 6), "reputation": rep.status,
            "vetted": rep.passes >= vetting_audits, "contained": rep.contained,
            "audits": {"passes": rep.passes, "fails": rep.fails, "misses": rep.misses, "retries": rep.retries,
                       "errors": rep.errors}}


def log_sweep(result: SweepResult) -> None:
    for address in result.expired:
        log.info("farmer {address} disqualified: suspended for longer than suspension_grace", address=address)
    for address, ended in result.ended.items():
        log.info("farmer {address} is disqualified: {ended} contracts ended, their files go to other farmers",
                 address=address, ended=ended)


class ReputationService:
    """The reputation job and the operator's view (``downstream-admin farmer``)."""

    def __init__(self, core: Any):
        self.core = core

    async def sweep(self) -> SweepResult:
        """One pass of the reputation job: suspensions past their grace become disqualifications,
        disqualified farmers' contracts end (their files return to the repair path), a page of
        farmers per transaction until none is left."""
        total = SweepResult()
        while True:
            page = await self.core.stores.reputation.sweep(self.core.now())
            log_sweep(page)
            total.expired += page.expired
            total.ended.update(page.ended)
            if not page.ended:
                return total

    async def of(self, addresses: list[str]) -> dict[str, dict[str, Any]]:
        """The standing of each address (see :func:`standing`)."""
        found = await self.core.stores.reputation.of_addresses(addresses)
        audits = self.core.config.vetting_audits
        return {a: standing(found.get(a), audits) for a in addresses}

    async def reinstate(self, address: str) -> str:
        """Lift a disqualification or suspension (fresh audit and unknown scores). Returns the
        status before."""
        before = await self.core.stores.reputation.reinstate(address, self.core.now())
        if before is None:
            raise NodeError(NOT_FOUND, "no_farmer", f"no farmer has address {address}")
        log.info("farmer {address} reinstated by the operator (was {before})", address=address, before=before)
        return before
