"""A farmer's standing: ok, suspended or disqualified, and what changes it.

- ok or suspended → disqualified: a tally with audit failures leaves the audit score below
  ``dq_threshold``; or a suspension lasts longer than ``suspension_grace``;
- ok → suspended: a tally with errors leaves the unknown-error score below ``suspension_threshold``;
- suspended → ok: a tally with answers leaves the unknown-error score at or above it again;
- the operator reinstates a disqualified or suspended farmer (fresh audit and unknown scores).

Only audit failures and errors can disqualify or suspend, and only answers can lift a suspension:
so a tally without either, on a farmer that is not suspended, changes no standing
(:func:`may_change`) — the store applies it with one linear ``UPDATE`` and reads nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from downstream_tx.domain.rules import DISQUALIFIED, INITIAL_ALPHA, OK, SUSPENDED, Rules, initial_alpha
from downstream_tx.domain.scores import Scores, Tally, below, dimensions

#: why a suspension became a disqualification (the reputation job)
GRACE_REASON = "suspended for longer than suspension_grace"
#: why a farmer is in good standing again (``downstream-admin farmer reinstate``)
REINSTATED_REASON = "reinstated by the operator"
#: the standings the operator can lift
REINSTATABLE = (DISQUALIFIED, SUSPENDED)


@dataclass(frozen=True)
class StandingChange:
    """A farmer's status changed (noted on the transaction, announced once it commits)."""

    address: str
    before: str
    after: str
    reason: str | None


@dataclass(frozen=True)
class Standing:
    """A status decided by :func:`decide`, with its reason (None: no reason, back to ok)."""

    status: str
    reason: str | None


def dq_reason(rules: Rules) -> str:
    return f"audit score below {rules.dq_threshold:g}"


def suspension_reason(rules: Rules) -> str:
    return f"unknown-error score below {rules.suspension_threshold:g}"


def may_change(tally: Tally, status: str) -> bool:
    """Can ``tally`` change the standing of a farmer with ``status``? Only audit failures and
    errors can disqualify or suspend; only a suspended farmer can recover."""
    return status == SUSPENDED or dimensions(tally)["audit"][1] > 0 or tally.errors > 0


def decide(status: str, after: Scores, tally: Tally, rules: Rules) -> Standing | None:
    """The standing a tally leaves a farmer of ``status`` in, given its scores ``after`` the tally;
    None: unchanged. In this order: disqualified (audit failures, audit score below
    ``dq_threshold``), suspended (errors, an ok farmer's unknown score below
    ``suspension_threshold``), ok again (answers, a suspended farmer's unknown score at or above
    it)."""
    audit_failures = dimensions(tally)["audit"][1]
    answered = dimensions(tally)["unknown"][0]
    if audit_failures and status != DISQUALIFIED and below(*after.audit, rules.dq_threshold):
        return Standing(DISQUALIFIED, dq_reason(rules))
    if tally.errors and status == OK and below(*after.unknown, rules.suspension_threshold):
        return Standing(SUSPENDED, suspension_reason(rules))
    if answered and status == SUSPENDED and not below(*after.unknown, rules.suspension_threshold):
        return Standing(OK, None)
    return None


def grace_cutoff(now: float, rules: Rules) -> float:
    """A farmer suspended at or before this time has used up its grace: it is disqualified."""
    return now - rules.suspension_grace


def grace_expired(status: str, since: float | None, now: float, rules: Rules) -> bool:
    return status == SUSPENDED and since is not None and since <= grace_cutoff(now, rules)


def reinstated(scores: Scores, rules: Rules | None = None) -> Scores:
    """The scores of a reinstated farmer: audit and unknown fresh (the unknown score at the steady
    state of its own factor), the online score kept."""
    unknown = initial_alpha((rules or Rules()).unknown_lam)
    return Scores(audit=(INITIAL_ALPHA, 0.0), online=scores.online, unknown=(unknown, 0.0))
