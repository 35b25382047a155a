"""Late v0 answers: the node's own slowness never counts against a farmer (docs/protocol-v0.md,
"Late answers").

An answer is judged by when its request *arrived* at the node (taken by the HTTP layer), not when
its transaction ran, and against the contract's current challenge *and* the previous one: when the
timer turns a contract's window while its challenge is outstanding, the challenge moves to
``prev_challenge_id`` (with its deadline, and ``prev_missed`` = 1 when the timer counted a miss).
An answer that matches a challenge and arrived before its deadline is a pass; after the deadline
but within ``late_grace`` seconds it is a *late pass* (a pass, also counted in ``late_passes``).
A pass on the previous challenge takes back the miss the timer counted for it.

Containment (db/reputation.py) asks a missed challenge again *in place*: the same ``challenge_id``
stays current with a later window (``contained`` > 0), it never moves to ``prev_challenge_id``
while re-asked, so one challenge is judged (and counted) once. For such a re-asked challenge the
window an answer may fall in starts where it was first issued (``prev_deadline``, the end of the
window before it), not at the re-ask.

:func:`judge` is the rule (a plain function of the row, no SQL); :func:`record_txn` writes its
verdict, guarded on the challenge it judged, so a retried transaction changes nothing twice.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from downstream_tx.db import counters, reputation
from downstream_tx.db.database import Txn

#: what the v0 timer keeps of a window it turns (its issuing UPDATE puts these first, so that they
#: read the old challenge, answer flag and deadline): the challenge if it was still outstanding,
#: else nothing. ``prev_missed`` is set to 1 by the pass's miss count (and to 0 for a forgiven
#: challenge) before; here it is cleared when nothing is kept.
PREV_SETS = ("prev_challenge_id = CASE WHEN challenge_id IS NOT NULL AND answered = 0 THEN challenge_id END, "
             "prev_deadline = deadline, "
             "prev_missed = CASE WHEN challenge_id IS NOT NULL AND answered = 0 THEN prev_missed ELSE 0 END")

#: verdicts
PASS, FAIL, NOT_DUE = "pass", "fail", "not_due"
CURRENT, PREVIOUS = "current", "previous"


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
    contained: int = 0


@dataclass(frozen=True)
class Verdict:
    status: str  # pass | fail | not_due
    which: str = CURRENT  # the challenge judged: current | previous
    late: bool = False


def _matches(response: str, expected: str | None) -> bool:
    return expected is not None and hmac.compare_digest(response.lower().encode(), expected.encode())


def judge(row: AnswerRow, response: str, arrived: float, grace: float) -> Verdict:
    """The verdict on ``response`` for a request that arrived at ``arrived``.

    1. It matches the outstanding current challenge and arrived before its deadline (+ ``grace``:
       late): pass.
    2. It matches the previous challenge (the timer turned the window while it was outstanding)
       and arrived before that deadline (+ ``grace``: late): pass on the previous challenge.
    3. It arrived inside the current challenge's window: fail (one attempt per challenge).
    4. It arrived before the current challenge was issued, inside the previous one's window: fail
       on the previous challenge (its miss becomes a fail).
    5. Otherwise nothing it could answer was outstanding when it arrived: not_due.
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
        return Verdict(FAIL, CURRENT)
    if prev and arrived < row.prev_deadline and (issued is None or arrived < issued):
        return Verdict(FAIL, PREVIOUS)
    return Verdict(NOT_DUE)


def record_txn(txn: Txn, row: AnswerRow, verdict: Verdict) -> int:
    """Write ``verdict`` (not ``not_due``). Returns the run of consecutive misses/fails after it."""
    late = int(verdict.late)
    if verdict.which == CURRENT:
        if verdict.status == PASS:
            changed = txn.execute("UPDATE contracts SET answered = 1, passes = passes + 1, "
                                  "late_passes = late_passes + ?, run = 0, contained = 0 "
                                  "WHERE id = ? AND answered = 0 AND challenge_id = ?",
                                  (late, row.id, row.challenge_id)).rowcount
            txn.count({counters.unanswered(0): -changed})  # (the row is an active v0 contract)
            return 0
        changed = txn.execute("UPDATE contracts SET answered = 1, fails = fails + 1, run = run + 1, contained = 0 "
                              "WHERE id = ? AND answered = 0 AND challenge_id = ?", (row.id, row.challenge_id)).rowcount
        txn.count({counters.unanswered(0): -changed})
        return row.run + 1
    # the previous challenge: the timer counted a miss for it (prev_missed) and moved on
    missed = int(row.prev_missed)
    if verdict.status == PASS:
        # the results after it: the current challenge's, if it was answered (a pass has reset the
        # run already; a fail leaves a run of one)
        run = min(row.run, 1) if row.answered and row.challenge_id is not None else 0
        txn.execute("UPDATE contracts SET passes = passes + 1, late_passes = late_passes + ?, misses = misses - ?, "
                    "run = ?, prev_challenge_id = NULL WHERE id = ? AND prev_challenge_id = ?",
                    (late, missed, run, row.id, row.prev_challenge_id))
        return run
    run = row.run + (1 - missed)
    txn.execute("UPDATE contracts SET fails = fails + 1, misses = misses - ?, run = ?, prev_challenge_id = NULL "
                "WHERE id = ? AND prev_challenge_id = ?", (missed, run, row.id, row.prev_challenge_id))
    return run


def reputation_txn(txn: Txn, rules: reputation.Rules, now: float, token_id: int, row: AnswerRow,
                   verdict: Verdict) -> None:
    """Record ``verdict`` (written by :func:`record_txn`) in the farmer's reputation, in the same
    transaction. A pass, late or not, is a pass; a fail a fail. On the previous challenge whose miss
    the timer counted (``prev_missed``), the reputation's ``misses`` count is taken back like the
    contract's; its scores are not rewound (a beta update with forgetting cannot be undone once
    other results followed it): a late pass then adds its success on top of the miss's failure, and
    a fail that replaces the miss moves the count only (its audit failure is already in the score)."""
    if verdict.status == NOT_DUE:
        return
    if row.contained and verdict.which == CURRENT:  # the challenge asked again is answered: out of containment
        address = txn.scalar("SELECT address FROM tokens WHERE id = ?", (token_id,))
        reputation.note_left_txn(txn, rules, str(address), 0, [(row.id, verdict.status)])
    taken_back = verdict.which == PREVIOUS and row.prev_missed
    if verdict.status == PASS:
        reputation.record_token_txn(txn, rules, now, token_id, reputation.Tally(passes=1))
        if taken_back:
            reputation.move_counts_token_txn(txn, token_id, misses=-1)
    elif taken_back:
        reputation.move_counts_token_txn(txn, token_id, fails=1, misses=-1)
    else:
        reputation.record_token_txn(txn, rules, now, token_id, reputation.Tally(fails=1))
