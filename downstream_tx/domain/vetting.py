"""Who gets new contracts (docs/operations.md, "Reputation"): eligibility, vetting and the share
of new contracts that farmers not vetted yet may take.

A disqualified, suspended (errors or offline) or contained farmer gets none. A farmer is *vetted*
after ``vetting_audits`` passes; a vetted farmer whose audit score is at or above the probation mark
and (``vetting_min_age``) whose first token is old enough is *preferred* (the files in most danger go
to it first); the others share ``vetting_share`` of the *recent* assignments: the counters of
assignments (all, and those to farmers not preferred) forget ``1/vetting_window`` of their value at
each new assignment. While no farmer in good standing is vetted at all there is no one to prefer,
and nothing is counted: the start's assignments never hold a new farmer back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from downstream_tx.domain.rules import DISQUALIFIED, OFFLINE, SUSPENDED, Rules
from downstream_tx.domain.scores import score

#: why a farmer gets no new contracts: its standing, or containment
CONTAINED = "contained"


class NotEligible(Exception):
    """The farmer may get no new contracts now (``reason``: disqualified, suspended, offline, contained)."""

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


def preferred(passes: int, alpha: float, beta: float, age: float, rules: Rules) -> bool:
    """Vetted, with an audit score (``alpha``, ``beta``) at or above :func:`probation_mark`, and
    ``age`` (seconds since the address's first token) at least ``vetting_min_age``."""
    return vetted(passes, rules.vetting_audits) and score(alpha, beta) >= probation_mark(rules) \
        and age >= rules.vetting_min_age


def eligible(status: str, passes: int, alpha: float, beta: float, contained: bool, rules: Rules,
             age: float = math.inf) -> bool:
    """Raise :class:`NotEligible` for a disqualified, suspended (errors or offline) or contained
    farmer. Otherwise return whether it is :func:`preferred`."""
    if status == DISQUALIFIED:
        raise NotEligible(DISQUALIFIED, "this farmer is disqualified: its audit score fell below the threshold")
    if status == SUSPENDED:
        raise NotEligible(SUSPENDED, "this farmer is suspended (repeated malformed requests or errors)")
    if status == OFFLINE:
        raise NotEligible(OFFLINE, "this farmer is suspended for being offline: its online score is below the "
                                   "offline_threshold; it is lifted once the score is back")
    if contained:
        raise NotEligible(CONTAINED, "this farmer is in containment: answer the outstanding challenge first")
    return preferred(passes, alpha, beta, age, rules)


def urgent_first(preferred: bool, anyone_vetted: bool) -> bool:
    """Does the farmer get the files in most danger first (else the least urgent)?"""
    return preferred or not anyone_vetted


@dataclass(frozen=True)
class Share:
    """How one new assignment counts: ``unvetted`` (1 for a farmer not preferred), whether it must
    fit in the vetting share (``guarded``), and whether it is counted at all (``counted``)."""

    unvetted: int
    guarded: bool
    counted: bool = True


def share(preferred: bool, anyone_vetted: bool) -> Share:
    """A preferred farmer's assignment counts in the total only; the others' in both, within the
    vetting share — unless no one is vetted, when there is no one to prefer and nothing is counted."""
    if preferred:
        return Share(0, False)
    if not anyone_vetted:
        return Share(0, False, counted=False)
    return Share(1, True)


def keep(rules: Rules) -> float:
    """What a vetting counter keeps of its value at each new assignment (``1 - 1/vetting_window``)."""
    return 1.0 - 1.0 / rules.vetting_window if rules.vetting_window > 1 else 0.0


def within_share(total: float, unvetted: float, rules: Rules) -> bool:
    """May one more assignment to a farmer not preferred be counted (``unvetted·d + 1 <=
    vetting_share · (total·d + 1)``, ``d`` = :func:`keep`)?"""
    d = keep(rules)
    return unvetted * d + 1 <= rules.vetting_share * (total * d + 1)


def counted(total: float, unvetted: float, to_unvetted: bool, rules: Rules) -> tuple[float, float]:
    """The counters after one counted assignment (to a farmer not preferred when ``to_unvetted``)."""
    d = keep(rules)
    return total * d + 1, unvetted * d + (1 if to_unvetted else 0)
