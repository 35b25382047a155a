"""Beta reputations with forgetting (Storj's audit score).

Each result updates ``alpha ← λ·alpha + w·s`` and ``beta ← λ·beta + w·(1 - s)`` with ``s`` = 1 for a
success, 0 for a failure, ``λ`` = 0.999 and weight ``w`` = 1; the score is ``alpha / (alpha +
beta)``. A new farmer starts at ``alpha = 1 / (1 - λ) = 1000``, ``beta = 0``: the steady state of a
farmer that has always passed (with ``alpha = 1`` a single early failure would put it at 0.5, far
below any sensible threshold). Three scores:

- audit: passes succeed; fails and *counted* misses (after containment) fail;
- online: not a tally's: it counts online windows, once per farmer (domain/online.py);
- unknown (suspension): answers succeed; malformed requests and errors on the farmer's side fail,
  with its own forgetting factor (``Rules.unknown_lam``).

The results one transaction records for a farmer are applied in a fixed order, successes first,
then failures, which the closed form :func:`coefficients` computes exactly; so a store can apply a
tally as one linear ``UPDATE`` (``column * scale + add``) with the coefficients computed here.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from downstream_tx.domain.rules import INITIAL_ALPHA, LAMBDA, WEIGHT

#: the three scores, in the order a reputation row holds them
SCORES = ("audit", "online", "unknown")
#: the counts a tally adds to a farmer's row
COUNTS = ("passes", "fails", "misses", "retries", "errors")


@dataclass
class Tally:
    """Results of one farmer within one transaction."""

    passes: int = 0
    fails: int = 0
    misses: int = 0  # counted misses (after containment)
    retries: int = 0  # missed deadlines asked again in containment (not counted as misses)
    errors: int = 0  # malformed requests, errors on the farmer's side

    def __bool__(self) -> bool:
        return bool(self.passes or self.fails or self.misses or self.retries or self.errors)


def update(alpha: float, beta: float, success: bool, lam: float = LAMBDA,
           weight: float = WEIGHT) -> tuple[float, float]:
    """One result, applied as written (the reference the closed form is tested against)."""
    return lam * alpha + weight * success, lam * beta + weight * (not success)


@functools.lru_cache(maxsize=4096)
def coefficients(successes: int, failures: int, lam: float = LAMBDA) -> tuple[float, float, float]:
    """``(scale, alpha_add, beta_add)`` such that ``successes`` successes then ``failures``
    failures (weight 1) turn ``(alpha, beta)`` into ``(scale·alpha + alpha_add, scale·beta +
    beta_add)``: ``scale = λ^(k+m)``, ``alpha_add = λ^m·(1 - λ^k)/(1 - λ)``, ``beta_add = (1 - λ^m)/(1 - λ)``."""
    k, m = successes, failures
    geometric = (lambda n: float(n)) if lam == 1 else (lambda n: (1 - lam ** n) / (1 - lam))
    return lam ** (k + m), lam ** m * geometric(k), geometric(m)


def score(alpha: float, beta: float) -> float:
    return alpha / (alpha + beta) if alpha + beta > 0 else 1.0


def below(alpha: float, beta: float, threshold: float) -> bool:
    """``score(alpha, beta) < threshold``, without a division (as a store may also write it)."""
    return alpha < threshold * (alpha + beta)


def dimensions(t: Tally) -> dict[str, tuple[int, int]]:
    """(successes, failures) of each score a tally changes (the online score counts windows, not
    results: domain/online.py)."""
    answered = t.passes + t.fails
    return {"audit": (t.passes, t.fails + t.misses), "unknown": (answered, t.errors)}


@dataclass(frozen=True)
class Scores:
    """A farmer's three scores as ``(alpha, beta)`` pairs."""

    audit: tuple[float, float] = (INITIAL_ALPHA, 0.0)
    online: tuple[float, float] = (INITIAL_ALPHA, 0.0)
    unknown: tuple[float, float] = (INITIAL_ALPHA, 0.0)


def changes(tally: Tally, lam: float = LAMBDA,
            unknown_lam: float | None = None) -> dict[str, tuple[float, float, float]]:
    """The linear update of each score a tally changes: ``{score: (scale, alpha_add, beta_add)}``
    (a score without results is left out); ``unknown_lam``: the unknown score's own factor (None:
    ``lam``)."""
    factor = {"unknown": lam if unknown_lam is None else unknown_lam}
    return {name: coefficients(s, f, factor.get(name, lam)) for name, (s, f) in dimensions(tally).items() if s or f}


def apply(scores: Scores, tally: Tally, lam: float = LAMBDA, unknown_lam: float | None = None) -> Scores:
    """The scores after a tally (:func:`changes` applied)."""
    delta = changes(tally, lam, unknown_lam)
    out = {}
    for name in SCORES:
        alpha, beta = getattr(scores, name)
        change = delta.get(name)
        if change is not None:
            scale, alpha_add, beta_add = change
            alpha, beta = alpha * scale + alpha_add, beta * scale + beta_add
        out[name] = (alpha, beta)
    return Scores(**out)
