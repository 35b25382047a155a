"""The reputation settings and the constants of the scores (docs/operations.md, "Reputation")."""

from __future__ import annotations

from dataclasses import dataclass

#: the forgetting factor and the weight of one result
LAMBDA = 0.999
WEIGHT = 1.0
#: a new farmer's alpha: 1 / (1 - λ), the steady state of one that always passes
INITIAL_ALPHA = 1000.0

#: a farmer's status
OK, SUSPENDED, DISQUALIFIED = "ok", "suspended", "disqualified"
#: the vetting counters are halved once this many assignments were counted, so the share is over
#: the recent assignments (a burst after a long time cannot use up a share of everything ever)
VETTING_WINDOW = 10_000.0


@dataclass(frozen=True)
class Rules:
    """The reputation settings: the node builds them from its configuration
    (``core.reputation.rules_of``) and gives them to every store that decides by them. These
    defaults are the configuration's."""

    dq_threshold: float = 0.96
    suspension_threshold: float = 0.6
    suspension_grace: float = 7 * 86400.0
    containment_retries: int = 3
    vetting_audits: int = 100
    vetting_share: float = 0.05
    lam: float = LAMBDA
