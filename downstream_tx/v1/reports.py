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


class ChallengeOutcome(Enum):
    #: the contract's challenge: the outstanding one, or a new one (the contract was due)
    CHALLENGE = "challenge"
    #: no contract of this token with this id
    NOT_FOUND = "not_found"
    #: the contract has expired (or ended)
    EXPIRED = "expired"
    #: its stored heartbeat state cannot give a challenge (corrupt, or another node secret's)
    NO_MORE = "no_more"


class ChallengeResult(NamedTuple):
    #: the contract id (as the farmer sent it when no contract has it)
    file_hash: Any
    outcome: ChallengeOutcome
    #: the challenge as the farmer is sent it (JSON text), with its seconds until due and whether
    #: it was answered — only for :attr:`ChallengeOutcome.CHALLENGE`
    challenge: str | None = None
    due: float = 0.0
    answered: bool = False


@dataclass(slots=True)
class ChallengesReport:
    """One :class:`ChallengeResult` per contract of a ``/challenge`` call, in the order asked."""

    entries: list[ChallengeResult]
