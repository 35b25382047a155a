"""What the v1 answer service decides of each proof of a batch: a typed report the route renders
(``v1/wire.py`` holds the original server's texts for each outcome)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, NamedTuple


class ProofOutcome(Enum):
    #: verified, and recorded
    OK = "ok"
    #: a proof that does not answer the outstanding challenge
    INVALID = "invalid"
    #: not a proof at all (counted against the farmer's unknown-error score)
    CORRUPTED = "corrupted"
    #: the contract had expired (or ended) when the answer arrived
    EXPIRED = "expired"
    #: the outstanding challenge was answered already
    ANSWERED = "answered"
    #: no contract of this token with this id
    NOT_FOUND = "not_found"


class ProofResult(NamedTuple):
    #: the contract id (as the farmer sent it when no contract has it)
    file_hash: Any
    outcome: ProofOutcome


@dataclass(slots=True)
class AnswerReport:
    """One :class:`ProofResult` per proof of an ``/answer`` batch, in the order they were sent."""

    entries: list[ProofResult]

    def count(self, outcome: ProofOutcome) -> int:
        return sum(1 for entry in self.entries if entry.outcome is outcome)
