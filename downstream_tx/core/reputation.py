"""Farmer reputation as the services see it (docs/operations.md, "Reputation"): the rules from the
configuration, a farmer's standing for display, the reputation job, the operator's reinstatement."""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger

from downstream_tx.config import Config
from downstream_tx.db.reputation import Reputation, ReputationStore, SweepResult
from downstream_tx.domain.containment import ContainmentChange
from downstream_tx.domain.placement import PlacementRules
from downstream_tx.domain.rules import DISQUALIFIED, OFFLINE, SUSPENDED, OnlineRules, Rules
from downstream_tx.domain.standing import REINSTATABLE, StandingChange
from downstream_tx.domain.vetting import NotEligible
from downstream_tx.errors import FORBIDDEN, NOT_FOUND, REFUSED, NodeError
from downstream_tx.times import iso_utc

log = Logger()


def rules_of(config: Config) -> Rules:
    return Rules(dq_threshold=config.dq_threshold, suspension_threshold=config.suspension_threshold,
                 suspension_grace=float(config.suspension_grace), containment_retries=config.containment_retries,
                 vetting_audits=config.vetting_audits, vetting_share=config.vetting_share,
                 unknown_lam=config.unknown_lambda, vetting_window=config.vetting_window,
                 vetting_min_age=float(config.vetting_min_age),
                 online=OnlineRules(window=config.online_window, lam=config.online_lambda,
                                    threshold=config.offline_threshold, grace=float(config.offline_grace),
                                    seen_every=config.last_seen_every))


def placement_of(config: Config) -> PlacementRules:
    return PlacementRules(config.distinct_networks, config.network_prefix_v4, config.network_prefix_v6)


def status_of(rep: Reputation | None) -> dict[str, Any]:
    """Since when the farmer has its status, and why (``downstream-admin``, the dashboard)."""
    return {"status_since": None if rep is None else rep.status_since,
            "status_reason": None if rep is None else rep.status_reason}


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
            "vetted": rep.vetted, "contained": rep.contained,
            "audits": {"passes": rep.passes, "fails": rep.fails, "misses": rep.misses, "retries": rep.retries,
                       "errors": rep.errors}}


def standing_word(rep: dict[str, Any] | None) -> str:
    """A farmer's standing in one word: disqualified, suspended, contained, vetting (not vetted yet)
    or ok."""
    if rep is None:
        return "-"
    if rep["reputation"] != "ok":
        return rep["reputation"]
    if rep["contained"]:
        return "contained"
    return "ok" if rep["vetted"] else "vetting"


def standing_sentence(rep: dict[str, Any], rules: Rules) -> str:
    """The standing for people, with why and since when (``farmer show``, the dashboard's farmer
    page): ``disqualified since 2026-12-07T10:00:00Z: audit score below 0.96``, ``ok, vetted``, …"""
    word = standing_word(rep)
    since = iso_utc(rep.get("status_since"))
    if word in ("disqualified", "suspended", "offline"):
        why = rep.get("status_reason") or "no reason recorded"
        return f"{word}{f' since {since}' if since else ''}: {why}"
    if word == "contained":
        return (f"contained: {rep['contained']} contracts missed a challenge and are asked it again; no new "
                "contracts until they are answered")
    if word == "vetting":
        return f"ok, not vetted yet ({rep['audits']['passes']} of {rules.vetting_audits} passes)"
    return "ok, vetted"


def threshold_note(score: float, threshold: float, name: str) -> str:
    """Where a score stands against its threshold, without a doubt: ``at or above the dq_threshold,
    0.96`` or ``below the dq_threshold, 0.96`` (a threshold of 0 never applies)."""
    if threshold <= 0:
        return f"{name} 0: never applies"
    return f"{'below' if score < threshold else 'at or above'} the {name}, {threshold:g}"


def log_sweep(result: SweepResult) -> None:
    for address in result.expired:
        log.info("farmer {address} is disqualified (was suspended): suspended for longer than suspension_grace; no "
                 "new contracts for any of its tokens, its contracts end", address=address)
    for address, ended in result.ended.items():
        log.info("farmer {address} (disqualified): {ended} contracts ended, their files go to other farmers",
                 address=address, ended=ended)


def _ids(ids) -> str:
    return ("contract " if len(ids) == 1 else "contracts ") + ", ".join(str(i) for i in ids)


def announce(note: object) -> None:
    """One log line per change of a farmer's standing, as its transaction commits (``Txn.note``):
    disqualified, suspended, no longer suspended; contracts entering containment or leaving it."""
    if isinstance(note, StandingChange):
        if note.after == DISQUALIFIED:
            log.info("farmer {address} is disqualified ({reason}; was {before}): no new contracts for any of its "
                     "tokens, its contracts end", address=note.address, reason=note.reason, before=note.before)
        elif note.after == SUSPENDED:
            log.info("farmer {address} is suspended ({reason}; was {before}): no new contracts until its "
                     "unknown-error score recovers (disqualified if still suspended after suspension_grace)",
                     address=note.address, reason=note.reason, before=note.before)
        elif note.after == OFFLINE:
            log.info("farmer {address} is suspended for being offline ({reason}; was {before}): no new contracts "
                     "until its online score is back; never disqualified for being offline",
                     address=note.address, reason=note.reason, before=note.before)
        else:
            log.info("farmer {address} is no longer {before}: back to {after}", address=note.address,
                     before=note.before, after=note.after)
    elif isinstance(note, ContainmentChange):
        v = "" if note.protocol is None else f" (v{note.protocol})"
        if note.entered:
            log.info("farmer {address} is contained: {ids}{v} missed the challenge's deadline; the same challenge is "
                     "asked again, up to {retries} times, before the miss counts, and the farmer gets no new contracts "
                     "meanwhile", address=note.address, ids=_ids(note.entered), v=v, retries=note.retries)
        outcome = {"pass": "answered the challenge asked again: pass",
                   "fail": "answered the challenge asked again wrongly: fail",
                   "miss": "did not answer the challenge asked again: the miss counts"}
        for result in ("pass", "fail", "miss"):
            ids = [cid for cid, r in note.left if r == result]
            if ids:
                log.info("farmer {address}: {ids}{v} {outcome}; out of containment", address=note.address,
                         ids=_ids(ids), v=v, outcome=outcome[result])


class ReputationService:
    """The reputation job and the operator's view (``downstream-admin farmer``)."""

    def __init__(self, store: ReputationStore, clock: Any, vetting_audits: int):
        self.store = store
        self.clock = clock
        #: passed challenges after which a farmer is vetted (``vetting_audits``)
        self.vetting_audits = vetting_audits

    async def sweep(self) -> SweepResult:
        """One pass of the reputation job: suspensions past their grace become disqualifications,
        disqualified farmers' contracts end (their files return to the repair path), a page of
        farmers per transaction until none is left."""
        total = SweepResult()
        while True:
            page = await self.store.sweep(self.clock.seconds())
            log_sweep(page)
            total.expired += page.expired
            total.ended.update(page.ended)
            total.online += page.online
            if not page.ended and not page.online_more:
                return total

    async def of(self, addresses: list[str]) -> dict[str, dict[str, Any]]:
        """The standing of each address (see :func:`standing`)."""
        found = await self.store.of_addresses(addresses)
        audits = self.vetting_audits
        return {a: {**standing(found.get(a), audits), **status_of(found.get(a))} for a in addresses}

    async def reinstate(self, address: str) -> str:
        """Lift a disqualification or suspension (fresh audit and unknown scores). Returns the
        status before. A farmer in good standing is refused (its scores are not reset)."""
        before = await self.store.reinstate(address, self.clock.seconds())
        if before is None:
            raise NodeError(NOT_FOUND, "no_farmer", f"no farmer has address {address}")
        if before not in REINSTATABLE:
            raise NodeError(REFUSED, "not_disqualified", f"farmer {address} is not disqualified or suspended (its "
                                                         f"status is {before}): nothing to reinstate, nothing changed")
        log.info("farmer {address} reinstated by the operator (was {before})", address=address, before=before)
        return before
