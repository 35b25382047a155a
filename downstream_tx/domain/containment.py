"""Containment (docs/operations.md, "Reputation"): a missed challenge is asked again before its
miss counts.

A contract whose challenge went unanswered by its deadline is asked the *same* challenge again,
up to ``containment_retries`` times (``contained`` counts the re-asks; each one is an online
failure, not a miss); the farmer gets no new contracts meanwhile. An answer — pass or fail — or a
counted miss ends the containment. v0 asks again in the current window; v1 gives the challenge one
more interval (or as many as have passed).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from downstream_tx.domain.rules import Rules
from downstream_tx.domain.windows import current_window, forgiven, window_bounds

#: how a contract leaves containment
PASS, FAIL, MISS = "pass", "fail", "miss"


@dataclass(frozen=True)
class ContainmentChange:
    """Contracts of one farmer entered containment (``entered``: their missed challenge is asked
    again for the first time) or left it (``left``: contract id → ``pass``, ``fail`` or ``miss``, the
    result that ended it)."""

    address: str
    protocol: int | None
    entered: tuple[int, ...]
    left: tuple[tuple[int, str], ...]
    #: the node's ``containment_retries``
    retries: int


@dataclass(frozen=True)
class ReAsk:
    """A v0 challenge asked again: the contract's new window ``seq``, when it is issued and due, and
    its ``contained`` count after."""

    seq: int
    issued: float
    deadline: float
    contained: int


def enabled(rules: Rules) -> bool:
    return rules.containment_retries > 0


def may_reask(contained: int, rules: Rules) -> bool:
    """May a challenge asked ``contained`` times again be asked once more (else its miss counts)?"""
    return contained < rules.containment_retries


def reask_v0(now: float, start: float, interval: float, seq: int, deadline: float, contained: int, rules: Rules,
             forgive: tuple[float, float] | None) -> ReAsk | None:
    """A v0 challenge left unanswered at ``deadline``: asked again in the current window, or None —
    its miss is the timer's to count (retries used up), or it is forgiven (the downtime window
    covers its deadline)."""
    if not may_reask(contained, rules) or forgiven(forgive, deadline, interval):
        return None
    k = current_window(now, start, interval, seq)
    issued, due = window_bounds(start, interval, k)
    return ReAsk(k, issued, due, contained + 1)


def reask_v1(now: float, due: float | None, interval: float, contained: int, rules: Rules) -> float | None:
    """A v1 challenge unanswered at its expiration: its new due time (as many intervals later as
    have passed, at least one), or None — the expiry fails the contract, a counted miss."""
    if due is None or not may_reask(contained, rules):
        return None
    return due + max(1, math.floor((now - due) / interval) + 1) * interval


def left(address: str, protocol: int | None, results: Iterable[tuple[int, str]],
         rules: Rules) -> ContainmentChange | None:
    """Answers took contracts of ``address`` out of containment (``results``: contract id, ``pass``
    or ``fail``); None for none."""
    out = tuple(sorted(results))
    return ContainmentChange(address, protocol, (), out, rules.containment_retries) if out else None


def changes(rows: Iterable[tuple[int, str, int]], settled: Mapping[int, str], retried: set[int],
            rules: Rules) -> list[ContainmentChange]:
    """Per farmer, the contracts that entered containment and those a result took out of it.
    ``rows``: (contract id, farmer, ``contained`` as the transaction reads it: after its re-asks were
    written, before a result resets it); ``settled``: contract id →
    the result that counts (pass, fail, miss); ``retried``: the ids asked again (``contained`` is 1
    after a first re-ask: it entered)."""
    entered: dict[str, list[int]] = defaultdict(list)
    out: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for cid, address, contained in rows:
        if cid in retried and contained == 1:
            entered[address].append(cid)
        elif cid in settled and contained > 0:
            out[address].append((cid, settled[cid]))
    return [ContainmentChange(address, None, tuple(sorted(entered.get(address, ()))),
                              tuple(sorted(out.get(address, ()))), rules.containment_retries)
            for address in sorted(set(entered) | set(out))]
