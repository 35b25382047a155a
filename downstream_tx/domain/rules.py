"""The reputation settings and the constants of the scores (docs/operations.md, "Reputation")."""

from __future__ import annotations

from dataclasses import dataclass

#: the forgetting factor and the weight of one result
LAMBDA = 0.999
WEIGHT = 1.0
#: a new farmer's alpha: 1 / (1 - λ), the steady state of one that always passes
INITIAL_ALPHA = 1000.0

#: a farmer's status; OFFLINE: suspended for being offline (domain/online.py)
OK, SUSPENDED, DISQUALIFIED, OFFLINE = "ok", "suspended", "disqualified", "offline"


def initial_alpha(lam: float) -> float:
    """A fresh score's alpha: 1 / (1 - λ), the steady state of a farmer that always succeeds."""
    return 1.0 / (1.0 - lam) if lam < 1 else INITIAL_ALPHA


@dataclass(frozen=True)
class OnlineRules:
    """The online rules (domain/online.py): online windows, last_seen writes, offline suspension."""

    #: seconds per online window (``online_window``)
    window: float = 3600.0
    #: forgetting factor of the online score per window (``online_lambda``)
    lam: float = 0.97
    #: online score under which a farmer unseen for ``grace`` is suspended (``offline_threshold``; 0: never)
    threshold: float = 0.5
    #: seconds a farmer must be unseen before an offline suspension (``offline_grace``)
    grace: float = 4 * 3600.0
    #: the least seconds between two writes of one token's last_seen (``last_seen_every``)
    seen_every: float = 60.0


DEFAULT_ONLINE = OnlineRules()


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
    #: the unknown-error score's own forgetting factor (``unknown_lambda``)
    unknown_lam: float = 0.98
    #: assignments the vetting share is taken over (``vetting_window``; domain/vetting.py)
    vetting_window: float = 1000.0
    #: seconds a farmer's first token must have existed before it is vetted (``vetting_min_age``)
    vetting_min_age: float = 0.0
    #: online windows, last_seen writes, offline suspension (domain/online.py)
    online: OnlineRules = DEFAULT_ONLINE
