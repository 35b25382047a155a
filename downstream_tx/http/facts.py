"""What the node knows of one request beyond twisted.web's own fields, in one typed object
attached once (:func:`facts_of`): when it arrived, the route it matched, the farmer it names, what
an answer route decided, and how much body the site let in."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: the request attribute the facts are kept under
ATTRIBUTE = "dtx_facts"


@dataclass(slots=True)
class RequestFacts:
    #: ``time.monotonic()`` when the site saw the request's head (its duration in the request log)
    started: float | None = None
    #: the reactor's time then: late answers are judged by it (db/late.py)
    arrived: float | None = None
    #: the matched route pattern, e.g. ``/api/downstream/chunk/<token>`` (never the raw path)
    route: str | None = None
    #: the farmer id of the token in the path, if the route has one
    farmer: str | None = None
    #: what an answer route decided (``pass``, ``fail``, ``pass:3,fail:1``) for the request log
    outcome: str | None = None
    #: body bytes received so far (the site's body cap)
    received: int = 0
    #: answered by the site before it was processed (413, 429)
    rejected: bool = False


def facts_of(request: Any) -> RequestFacts:
    """The request's facts, attached at the first call (the site's requests have them from the
    start; a request made by a test gets them here)."""
    facts = getattr(request, ATTRIBUTE, None)
    if facts is None:
        facts = RequestFacts()
        setattr(request, ATTRIBUTE, facts)
    return facts


def route_of(request: Any) -> str:
    """The matched route pattern (never the raw path, which may hold a token)."""
    facts = getattr(request, ATTRIBUTE, None)
    return (facts.route if facts is not None else None) or "unmatched"


def farmer_of(request: Any) -> str | None:
    """The farmer id of the token in the request's path, if the route has one."""
    facts = getattr(request, ATTRIBUTE, None)
    return None if facts is None else facts.farmer


def arrived_at(request: Any, clock: Any) -> float:
    """When the request arrived at the node (the site records it once the request's head is read,
    before it waits for the reactor, a pool thread or the database); ``clock``'s now for a
    request that did not come through the site (tests driving the resource directly)."""
    facts = getattr(request, ATTRIBUTE, None)
    arrived = None if facts is None else facts.arrived
    return clock.seconds() if arrived is None else arrived


def set_outcome(request: Any, outcome: str) -> None:
    """Record what an answer route decided for the request log line, which otherwise shows only
    the HTTP status (200 for a pass and a fail alike)."""
    facts_of(request).outcome = outcome


def outcome_of(request: Any) -> str | None:
    facts = getattr(request, ATTRIBUTE, None)
    return None if facts is None else facts.outcome
