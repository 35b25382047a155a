"""Vetting by a share of the recent assignments (docs/operations.md, "Reputation"): pure rules.

A farmer is *vetted* (preferred for new contracts, the files in most danger first) once it passed
``audits`` challenges, its audit score is at or above the probation mark (halfway from the
disqualification threshold to 1) and, optionally, its first token is at least ``min_age`` seconds
old. Farmers not vetted share ``share`` of the recent assignments: the counters of assignments
(all, and those to farmers not vetted) forget with factor ``1 - 1/window`` per assignment, so the
share is over about the last ``window`` assignments, and assignments made while no farmer was
vetted are not counted at all (nobody could be preferred): a new farmer always gets work soon."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class VettingRules:
    audits: int = 100
    share: float = 0.05
    #: assignments the share is taken over (``vetting_window``)
    window: float = 1000.0
    #: seconds a farmer's first token must have existed before it is vetted (``vetting_min_age``)
    min_age: float = 0.0
    dq_threshold: float = 0.96


def probation_mark(dq_threshold: float) -> float:
    """The audit score under which a vetted farmer is treated as not vetted (halfway from the
    disqualification threshold to 1: 0.98 at the default 0.96)."""
    return (1.0 + dq_threshold) / 2


def vetted(passes: int, audit_score: float, age: float, rules: VettingRules) -> bool:
    """Is the farmer preferred? (``age``: seconds since its address's first token.)"""
    return passes >= rules.audits and audit_score >= probation_mark(rules.dq_threshold) and age >= rules.min_age


def keep(rules: VettingRules) -> float:
    """What a counter keeps of its value at each new assignment (``1 - 1/window``)."""
    return 1.0 - 1.0 / rules.window if rules.window > 1 else 0.0


def allows(total: float, unvetted: float, rules: VettingRules) -> bool:
    """May one more assignment go to a farmer not vetted, the counters standing at ``total`` and
    ``unvetted``? (The store's guarded UPDATE asks the same in SQL.)"""
    d = keep(rules)
    return unvetted * d + 1 <= rules.share * (total * d + 1)


def counted(total: float, unvetted: float, to_unvetted: bool, rules: VettingRules) -> tuple[float, float]:
    """The counters after one assignment (to a farmer not vetted when ``to_unvetted``)."""
    d = keep(rules)
    return total * d + 1, unvetted * d + (1 if to_unvetted else 0)
