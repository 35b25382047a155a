"""Who gets new contracts (docs/operations.md, "Reputation"): eligibility, vetting and the share
of new contracts that farmers not vetted yet may take.

A disqualified, suspended or contained farmer gets none. A farmer is *vetted* after
``vetting_audits`` passes; a vetted farmer whose audit score is at or above the probation mark is
*preferred* (the files in most danger go to it first); the others share ``vetting_share`` of the new
assignments — unless no farmer in good standing is vetted at all, when there is no one to prefer.
"""

from __future__ import annotations

from dataclasses import dataclass

from downstream_tx.domain.rules import DISQUALIFIED, SUSPENDED, VETTING_WINDOW, Rules
from downstream_tx.domain.scores import score

#: why a farmer gets no new contracts: its standing, or containment
CONTAINED = "contained"


class NotEligible(Exception):
    """The farmer may get no new contracts now (``reason``: disqualified, suspended, contained)."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


def probation_mark(rules: Rules) -> float:
    """The audit score under which a vetted farmer is treated as not vetted (halfway from the
    disqualification threshold to 1: 0.98 at the default 0.96)."""
    return (1.0 + rules.dq_threshold) / 2


def vetted(passes: int, vetting_audits: int) -> bool:
    """Is a farmer with ``passes`` passes vetted (``vetting_audits`` of the node's rules)?"""
    return passes >= vetting_audits


def eligible(status: str, passes: int, alpha: float, beta: float, contained: bool, rules: Rules) -> bool:
    """Raise :class:`NotEligible` for a disqualified, suspended or contained farmer. Otherwise
    return whether it is *preferred*: vetted with an audit score (``alpha``, ``beta``) at or above
    :func:`probation_mark`."""
    if status == DISQUALIFIED:
        raise NotEligible(DISQUALIFIED, "this farmer is disqualified: its audit score fell below the threshold")
    if status == SUSPENDED:
        raise NotEligible(SUSPENDED, "this farmer is suspended (repeated malformed requests or errors)")
    if contained:
        raise NotEligible(CONTAINED, "this farmer is in containment: answer the outstanding challenge first")
    return vetted(passes, rules.vetting_audits) and score(alpha, beta) >= probation_mark(rules)


def urgent_first(preferred: bool, anyone_vetted: bool) -> bool:
    """Does the farmer get the files in most danger first (else the least urgent)?"""
    return preferred or not anyone_vetted


@dataclass(frozen=True)
class Share:
    """How one new assignment counts: ``unvetted`` (1 for a farmer not preferred), and whether it
    must fit in the vetting share (``guarded``)."""

    unvetted: int
    guarded: bool


def share(preferred: bool, anyone_vetted: bool) -> Share:
    """A preferred farmer's assignment counts in the total only; the others' in both, within the
    vetting share — unless no one is vetted, when there is no one to prefer."""
    if preferred:
        return Share(0, False)
    return Share(1, anyone_vetted)


def within_share(total: float, unvetted: float, rules: Rules) -> bool:
    """May one more assignment to a farmer not preferred be counted (``unvetted + 1 <=
    vetting_share · (total + 1)``)?"""
    return unvetted + 1 <= rules.vetting_share * (total + 1)


def halved(total: float) -> bool:
    """Are the vetting counters past their window (then both are halved)?"""
    return total >= VETTING_WINDOW
