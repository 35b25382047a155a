"""The verdicts of the v0 protocol: on an answer (pass, late pass, pass on the previous challenge,
fail, not due) and on a contract at its deadline (miss, forgiven, failed). docs/protocol-v0.md,
"Late answers" and "Timing".

An answer is judged by when its request *arrived* at the node (taken by the HTTP layer), not when
its transaction ran, and against the contract's current challenge *and* the previous one: when the
timer turns a contract's window while its challenge is outstanding, the challenge moves to the
previous one (with its deadline, and ``prev_missed`` when the timer counted a miss). An answer that
matches a challenge and arrived before its deadline is a pass; after the deadline but within
``late_grace`` seconds it is a *late pass* (a pass, also counted as late). A pass on the previous
challenge takes back the miss the timer counted for it.

Containment asks a missed challenge again *in place*: the same challenge stays current with a later
window (``contained`` > 0), it never becomes the previous one while re-asked, so one challenge is
judged (and counted) once. For such a re-asked challenge the window an answer may fall in starts
where it was first issued (``prev_deadline``, the end of the window before it), not at the re-ask.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import NamedTuple

from downstream_tx.domain.scores import Tally
from downstream_tx.domain.windows import forgiven

#: verdicts: an answer's (pass, fail), a deadline's (miss, forgiven); not_due: nothing outstanding
PASS, FAIL, MISS, FORGIVEN, NOT_DUE = "pass", "fail", "miss", "forgiven", "not_due"
#: the challenge an answer's verdict is on
CURRENT, PREVIOUS = "current", "previous"


@dataclass(frozen=True)
class Verdict:
    """What a rule decided about a contract's challenge: ``status`` (:data:`PASS`, :data:`FAIL`,
    :data:`MISS`, :data:`FORGIVEN` or :data:`NOT_DUE`), on ``which`` challenge, ``late`` for a pass
    after the deadline within the grace, and ``failed`` when the contract ends as failed."""

    status: str = NOT_DUE
    which: str = CURRENT
    late: bool = False
    failed: bool = False

    @property
    def missed(self) -> bool:
        return self.status == MISS

    @property
    def forgiven(self) -> bool:
        return self.status == FORGIVEN


# --- an answer ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class AnswerRow:
    """A v0 contract as the answer sees it."""

    id: int
    challenge_id: int | None
    answered: bool
    issued: float | None
    deadline: float
    run: int
    expected: str | None
    prev_challenge_id: int | None
    prev_deadline: float | None
    prev_missed: bool
    prev_expected: str | None
    #: times the current challenge was asked again (containment); 0: not contained
    contained: int


def _matches(response: str, expected: str | None) -> bool:
    return expected is not None and hmac.compare_digest(response.lower().encode(), expected.encode())


def judge(row: AnswerRow, response: str, arrived: float, grace: float, max_failures: int | None = None) -> Verdict:
    """The verdict on ``response`` for a request that arrived at ``arrived``.

    1. It matches the outstanding current challenge and arrived before its deadline (+ ``grace``:
       late): pass.
    2. It matches the previous challenge (the timer turned the window while it was outstanding)
       and arrived before that deadline (+ ``grace``: late): pass on the previous challenge.
    3. It arrived inside the current challenge's window: fail (one attempt per challenge).
    4. It arrived before the current challenge was issued, inside the previous one's window: fail
       on the previous challenge (its miss becomes a fail).
    5. Otherwise nothing it could answer was outstanding when it arrived: not_due.

    A fail that makes ``max_failures`` misses or fails in a row (:func:`run_after`) fails the
    contract (None: never).
    """
    current = row.challenge_id is not None and not row.answered
    # a challenge re-asked by containment has been outstanding since its first window
    issued = row.prev_deadline if row.contained else row.issued
    prev = row.prev_challenge_id is not None and row.prev_deadline is not None and row.prev_expected is not None
    if current and arrived < row.deadline + grace and _matches(response, row.expected):
        return Verdict(PASS, CURRENT, late=arrived >= row.deadline)
    if prev and arrived < row.prev_deadline + grace and _matches(response, row.prev_expected):
        return Verdict(PASS, PREVIOUS, late=arrived >= row.prev_deadline)
    if current and arrived < row.deadline and (issued is None or arrived >= issued):
        verdict = Verdict(FAIL, CURRENT)
    elif prev and arrived < row.prev_deadline and (issued is None or arrived < issued):
        verdict = Verdict(FAIL, PREVIOUS)
    else:
        return Verdict(NOT_DUE)
    if max_failures is not None and run_after(row, verdict) >= max_failures:
        return Verdict(FAIL, verdict.which, failed=True)
    return verdict


def run_after(row: AnswerRow, verdict: Verdict) -> int:
    """The contract's run of consecutive misses and fails after ``verdict`` (pass or fail). On the
    previous challenge, whose miss the timer may have counted (``prev_missed``): a pass leaves the
    results after it (the current challenge's, if answered: a pass reset the run, a fail left one);
    a fail replaces the miss counted for it, or adds one."""
    if verdict.which == CURRENT:
        return 0 if verdict.status == PASS else row.run + 1
    if verdict.status == PASS:
        return min(row.run, 1) if row.answered and row.challenge_id is not None else 0
    return row.run + (1 - int(row.prev_missed))


@dataclass(frozen=True)
class AnswerEffect:
    """What a v0 answer's verdict does to the farmer's reputation: the ``tally`` to record (scores
    and counts), counts moved without touching the scores (``fails``, ``misses``: a late answer
    settling a miss the timer counted), and whether it ends the contract's containment."""

    tally: Tally
    fails: int = 0
    misses: int = 0
    leaves_containment: bool = False


def effect(row: AnswerRow, verdict: Verdict) -> AnswerEffect | None:
    """The reputation effect of ``verdict`` (None for not_due). A pass, late or not, is a pass; a
    fail a fail. On the previous challenge whose miss the timer counted, the ``misses`` count is
    taken back; the scores are not rewound (a beta update with forgetting cannot be undone once
    other results followed it): a late pass then adds its success on top of the miss's failure, and
    a fail that replaces the miss moves the count only (its audit failure is already in the
    score). An answer to a challenge asked again takes the contract out of containment."""
    if verdict.status not in (PASS, FAIL):
        return None
    leaves = bool(row.contained) and verdict.which == CURRENT
    taken_back = verdict.which == PREVIOUS and row.prev_missed
    if verdict.status == PASS:
        return AnswerEffect(Tally(passes=1), misses=-int(taken_back), leaves_containment=leaves)
    if taken_back:
        return AnswerEffect(Tally(), fails=1, misses=-1, leaves_containment=leaves)
    return AnswerEffect(Tally(fails=1), leaves_containment=leaves)


# --- a contract at its deadline -----------------------------------------------------------------

class Due(NamedTuple):
    """A contract whose deadline has come, as the timer pass judges it."""

    id: int
    file_id: int
    #: consecutive misses or fails so far
    run: int
    deadline: float
    interval: int
    #: its challenge was issued and not answered
    outstanding: bool


def judge_due(due: Due, max_failures: int, forgive: tuple[float, float] | None) -> Verdict:
    """The v0 rule for a contract at its deadline (the one place a pass decides miss and fail).

    An unanswered outstanding challenge is a miss, unless its deadline fell inside the ``forgive``
    window (the node itself was down) or within one interval after it (:func:`~downstream_tx.domain.
    windows.forgiven`); ``max_failures`` consecutive misses or fails fail the contract. Any other
    contract (nothing outstanding: not_due) gets the challenge of its current window."""
    outstanding = bool(due.outstanding)
    if outstanding and forgiven(forgive, due.deadline, due.interval):
        status = FORGIVEN
    else:
        status = MISS if outstanding else NOT_DUE
    return Verdict(status, failed=due.run + (status == MISS) >= max_failures)


# --- v1 ---------------------------------------------------------------------------------------------

#: why a verified v1 proof was not recorded: its contract ended or expired, or its challenge was
#: answered already (or moved on)
EXPIRED, ANSWERED = "expired", "answered"


def v1_unrecorded(active: bool, deadline: float, answered: bool, seq: int, proved_seq: int,
                  now: float) -> str | None:
    """Does a verified proof of challenge ``proved_seq`` count as a pass of its contract at ``now``
    (None), or why not (:data:`EXPIRED`, :data:`ANSWERED`)? (The store writes it with one guarded
    UPDATE of the same condition, and asks this only when the guard left a contract out.)"""
    if not active or now >= deadline:
        return EXPIRED
    if answered or seq != proved_seq:
        return ANSWERED
    return None


def v1_at_expiry(answered: bool) -> Verdict:
    """A v1 contract at its expiration, after containment: its last challenge answered, nothing is
    outstanding (the farmer stopped asking, or the challenges ran out: the contract ends); else a
    miss that fails it."""
    return Verdict(NOT_DUE) if answered else Verdict(MISS, failed=True)
