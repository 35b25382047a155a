"""Online and offline, kept apart from failing (docs/operations.md, "Reputation"): pure rules, no
database, no reactor.

The node records when each token's farmer last made a request (``last_seen``), cheaply: a request
writes only when the stored time is older than ``seen_every`` seconds or than the start of the
current online window (:func:`should_record`), so at most one write per token per ``seen_every``
and at least one in every online window the farmer is seen in.

- A contract's challenge that went unanswered is judged by whether its farmer (payout address) was
  *active* in the challenge's window (:func:`was_active`): active, it had the chance and did not
  answer — containment, then an audit failure; not active, the farmer was offline — the contract
  still counts the miss (and fails after ``max_failures``, its file going to other farmers), but
  the farmer's audit score is untouched.
- Being offline costs the *online* score, once per online window (not once per contract): a window
  of ``window`` seconds in which the farmer made no request is a failure, one in which it made one a
  success (:func:`count_windows`), beta reputation with forgetting factor ``lam``.
- Online now (:func:`seen_online`, the status API's view): a request in the last ``window``
  seconds.
- Offline suspension (:func:`offline_change`): a farmer whose online score fell below
  ``threshold`` and that has not been seen for ``grace`` seconds is suspended for being offline
  (no new contracts); back at or above the threshold it is ok again. Being offline alone never
  disqualifies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from downstream_tx.domain.rules import DEFAULT_ONLINE, OFFLINE, OK, OnlineRules
from downstream_tx.domain.scores import coefficients, score

__all__ = ["DEFAULT_ONLINE", "OFFLINE", "OK", "OnlineRules", "Windows", "count_windows", "counted_for", "decay",
           "offline_change", "score", "seen_online", "should_record", "was_active", "window_of"]


def window_of(t: float, rules: OnlineRules) -> int:
    """The online window holding time ``t`` (window k is ``[k·window, (k+1)·window)``)."""
    return math.floor(t / rules.window)


def should_record(last_seen: float | None, now: float, rules: OnlineRules) -> bool:
    """Does a request at ``now`` write the token's ``last_seen``? Only when the stored time is older
    than ``seen_every`` seconds or than the start of ``now``'s online window."""
    if last_seen is None:
        return True
    return last_seen < max(now - rules.seen_every, window_of(now, rules) * rules.window)


def was_active(last_seen: float | None, deadline: float, interval: float, rules: OnlineRules) -> bool:
    """Did the farmer make a request in the window ``(deadline - interval, deadline]`` of a challenge
    (or after it)? The stored time may lag the last request by up to ``seen_every`` (the write
    skipped), so the test gives it that much: a farmer is judged offline only when it surely was."""
    return last_seen is not None and last_seen >= deadline - interval - rules.seen_every


def seen_online(last_seen: float | None, now: float, rules: OnlineRules) -> bool:
    """Is the farmer online now, by its requests (the status API's ``seen_online``): did it make one
    in the last ``window`` seconds? The stored time may lag the last request by up to ``seen_every``
    (the write skipped), so the test gives it that much, as :func:`was_active` does."""
    return last_seen is not None and last_seen >= now - rules.window - rules.seen_every


def decay(alpha: float, beta: float, successes: int, failures: int, lam: float) -> tuple[float, float]:
    """``successes`` successes, then ``failures`` failures (weight 1 each) applied to a beta
    reputation ``(alpha, beta)`` with forgetting factor ``lam`` (the closed form of domain/scores.py)."""
    scale, alpha_add, beta_add = coefficients(successes, failures, lam)
    return alpha * scale + alpha_add, beta * scale + beta_add


@dataclass(frozen=True)
class Windows:
    """The online windows a count settles: ``successes`` (seen), then ``failures`` (not seen), and
    the last window now counted."""

    successes: int
    failures: int
    counted: int


def count_windows(counted: int | None, last_seen: float | None, now: float, rules: OnlineRules) -> Windows:
    """The finished online windows after ``counted`` (None: a farmer not counted yet, whose count
    starts now: nothing) up to the one before ``now``'s: window k was online when the farmer was seen in it or later
    (``last_seen`` ≥ its start: every first request of a window writes), offline otherwise. Those
    seen come first in time, the offline ones last."""
    last = window_of(now, rules) - 1
    if counted is None or counted >= last:
        return Windows(0, 0, last if counted is None else counted)
    first = counted + 1
    if last_seen is None:
        return Windows(0, last - first + 1, last)
    seen_until = window_of(last_seen, rules)  # windows up to this one were seen (or are unknown)
    successes = max(0, min(last, seen_until) - first + 1)
    return Windows(successes, last - first + 1 - successes, last)


def counted_for(status: str, windows: Windows) -> Windows:
    """What a farmer's count of windows does to its online score: a farmer already suspended for
    being offline loses nothing more while it stays away (else a long absence would cost as long a
    return), its online windows still count."""
    return Windows(windows.successes, 0, windows.counted) if status == OFFLINE else windows


def offline_change(status: str, online_score: float, last_seen: float | None, now: float,
                   rules: OnlineRules) -> str | None:
    """The offline status change a new online score causes, or None: ok → offline when the score is
    below ``threshold`` and the farmer has not been seen for ``grace`` seconds; offline → ok at or
    above the threshold. Other statuses (suspended, disqualified) are not this rule's to change."""
    if status == OK and rules.threshold > 0 and online_score < rules.threshold and (
            last_seen is None or now - last_seen >= rules.grace):
        return OFFLINE
    if status == OFFLINE and online_score >= rules.threshold:
        return OK
    return None
