"""The verdicts of the v0 protocol (domain/verdicts.py): an answer's (on time, late, on the previous
challenge, fail, not due — docs/protocol-v0.md "Late answers") against a written table, a contract's
at its deadline (miss, forgiven, failed), the run after a verdict and what it does to the farmer's
reputation. No database, no reactor."""

from __future__ import annotations

import pytest

from downstream_tx.domain.scores import Tally
from downstream_tx.domain.verdicts import (
    CURRENT,
    FAIL,
    FORGIVEN,
    MISS,
    NOT_DUE,
    PASS,
    PREVIOUS,
    AnswerEffect,
    AnswerRow,
    Due,
    Verdict,
    effect,
    judge,
    judge_due,
    run_after,
    v1_at_expiry,
    v1_unrecorded,
)

GRACE = 5.0
P, F, N, M, FG = PASS, FAIL, NOT_DUE, MISS, FORGIVEN
CUR, PREV = CURRENT, PREVIOUS


# --- an answer, against a table -------------------------------------------------------------------

def row(**kw) -> AnswerRow:
    """A contract whose challenge 2 (answer "cur") is outstanding from 100 to 160; challenge 1
    (answer "prev", deadline 100) was missed."""
    values = dict(id=1, challenge_id=2, answered=False, issued=100.0, deadline=160.0, run=1, expected="cur",
                  prev_challenge_id=1, prev_deadline=100.0, prev_missed=True, prev_expected="prev", contained=0)
    values.update(kw)
    return AnswerRow(**values)



TABLE = [
    # (row changes, response, arrived) -> verdict
    ({}, "cur", 120.0, Verdict(P, CUR)),
    ({}, "cur", 159.9, Verdict(P, CUR)),
    ({}, "cur", 160.0, Verdict(P, CUR, late=True)),  # at the deadline: within the grace
    ({}, "cur", 164.9, Verdict(P, CUR, late=True)),
    ({}, "cur", 165.0, Verdict(N)),  # past the grace
    ({}, "wrong", 120.0, Verdict(F, CUR)),
    ({}, "wrong", 160.0, Verdict(N)),  # after the deadline a wrong answer is not a fail
    ({}, "prev", 99.0, Verdict(P, PREV)),  # arrived in time; the timer turned the window before it ran
    ({}, "prev", 100.0, Verdict(P, PREV, late=True)),  # at the previous deadline: late
    ({}, "prev", 102.0, Verdict(P, PREV, late=True)),
    ({}, "prev", 105.0, Verdict(F, CUR)),  # past the previous grace: judged against the current one
    ({}, "wrong", 99.0, Verdict(F, PREV)),  # arrived in the previous window: its miss becomes a fail
    ({"prev_challenge_id": None, "prev_expected": None}, "prev", 102.0, Verdict(F, CUR)),  # nothing kept
    ({"prev_challenge_id": None, "prev_expected": None}, "wrong", 99.0, Verdict(N)),
    ({"prev_challenge_id": None}, "prev", 99.0, Verdict(N)),  # no previous challenge: nothing to match
    ({"prev_deadline": None}, "prev", 99.0, Verdict(N)),
    ({"issued": 110.0}, "wrong", 100.0, Verdict(N)),  # between the windows: at the previous deadline, before this
    ({"answered": True, "issued": 90.0}, "wrong", 95.0, Verdict(N)),  # after the current one was issued
    ({"answered": True, "issued": 95.0}, "wrong", 95.0, Verdict(N)),  # at its issue
    ({"answered": True, "issued": 95.0}, "wrong", 94.9, Verdict(F, PREV)),  # just before it
    ({"answered": True}, "cur", 120.0, Verdict(N)),  # one attempt per challenge
    ({"answered": True}, "prev", 101.0, Verdict(P, PREV, late=True)),
    ({"challenge_id": None, "expected": None, "answered": True}, "prev", 101.0, Verdict(P, PREV, late=True)),
    ({"answered": True}, "CUR".lower(), 120.0, Verdict(N)),
]


@pytest.mark.parametrize("changes, response, arrived, verdict", TABLE)
def test_judge_table(changes, response, arrived, verdict):
    assert judge(row(**changes), response, arrived, GRACE) == verdict


def test_judge_without_grace_is_the_old_rule():
    assert judge(row(), "cur", 159.9, 0.0) == Verdict(P, CUR)
    assert judge(row(), "cur", 160.0, 0.0) == Verdict(N)
    assert judge(row(), "prev", 100.0, 0.0) == Verdict(F, CUR)


def test_the_verdict_words():
    assert (P, F, M, FG, N, CUR, PREV) == ("pass", "fail", "miss", "forgiven", "not_due", "current", "previous")
    assert Verdict() == Verdict(N, CUR, late=False, failed=False)
    assert Verdict(M).missed and not Verdict(M).forgiven
    assert Verdict(FG).forgiven and not Verdict(FG).missed
    with pytest.raises(AttributeError):
        Verdict().status = P  # frozen


def test_the_verdict_values_are_frozen():
    for value in (Verdict(), row(), AnswerEffect(Tally())):
        with pytest.raises(AttributeError):
            value.late = True  # type: ignore[misc]


def test_a_reasked_challenge_is_outstanding_since_its_first_window():
    # contained: asked again in the window 160..220, first issued at 100 (prev_deadline)
    contained = row(contained=1, issued=160.0, deadline=220.0, prev_challenge_id=None, prev_expected=None)
    assert judge(contained, "wrong", 120.0, GRACE) == Verdict(F, CUR)
    assert judge(contained, "wrong", 99.0, GRACE) == Verdict(N)
    assert judge(row(issued=130.0), "wrong", 120.0, GRACE) == Verdict(N)  # not contained: before it was issued


def test_the_answer_is_compared_lower_case_and_whole():
    assert judge(row(), "CUR", 120.0, GRACE) == Verdict(P, CUR)
    assert judge(row(), "cu", 120.0, GRACE) == Verdict(F, CUR)
    assert judge(row(expected=None), "cur", 120.0, GRACE) == Verdict(F, CUR)


@pytest.mark.parametrize("changes, response, arrived, run_, failed", [
    ({}, "wrong", 120.0, 2, False),  # the current challenge: run 1 + 1
    ({"run": 2}, "wrong", 120.0, 3, True),  # the third in a row fails the contract
    ({"run": 2}, "wrong", 99.0, 2, False),  # the previous one's miss becomes its fail: run unchanged
    ({"run": 2, "prev_missed": False}, "wrong", 99.0, 3, True),  # not counted yet: one more
])
def test_a_fail_that_makes_max_failures_in_a_row_fails_the_contract(changes, response, arrived, run_, failed):
    verdict = judge(row(**changes), response, arrived, GRACE, max_failures=3)
    assert run_after(row(**changes), verdict) == run_
    assert verdict.failed is failed and verdict.status == F


def test_a_pass_never_fails_the_contract():
    assert judge(row(run=5), "cur", 120.0, GRACE, max_failures=1) == Verdict(P, CUR)
    assert judge(row(run=5), "wrong", 120.0, GRACE) == Verdict(F, CUR)  # no limit given: never


@pytest.mark.parametrize("changes, verdict, run_", [
    ({}, Verdict(P, CUR), 0),
    ({"run": 4}, Verdict(F, CUR), 5),
    ({"run": 4}, Verdict(P, PREV), 0),  # the current challenge unanswered
    ({"run": 4, "answered": True}, Verdict(P, PREV), 1),  # answered (a fail: a run of one)
    ({"run": 0, "answered": True}, Verdict(P, PREV), 0),  # answered by a pass
    ({"run": 4, "answered": True, "challenge_id": None}, Verdict(P, PREV), 0),  # starved: nothing after it
    ({"run": 4}, Verdict(F, PREV), 4),  # its counted miss becomes the fail
    ({"run": 4, "prev_missed": False}, Verdict(F, PREV), 5),
])
def test_the_run_after_a_verdict(changes, verdict, run_):
    assert run_after(row(**changes), verdict) == run_


@pytest.mark.parametrize("changes, verdict, expected", [
    ({}, Verdict(N), None),
    ({}, Verdict(P, CUR), AnswerEffect(Tally(passes=1))),
    ({}, Verdict(P, CUR, late=True), AnswerEffect(Tally(passes=1))),  # late is a pass
    ({}, Verdict(F, CUR), AnswerEffect(Tally(fails=1))),
    ({"contained": 2}, Verdict(P, CUR), AnswerEffect(Tally(passes=1), leaves_containment=True)),
    ({"contained": 1}, Verdict(F, CUR), AnswerEffect(Tally(fails=1), leaves_containment=True)),
    ({}, Verdict(P, PREV), AnswerEffect(Tally(passes=1), misses=-1)),  # the miss's count is taken back
    ({"prev_missed": False}, Verdict(P, PREV), AnswerEffect(Tally(passes=1))),
    ({}, Verdict(F, PREV), AnswerEffect(Tally(), fails=1, misses=-1)),  # the count moves, the score stays
    ({"prev_missed": False}, Verdict(F, PREV), AnswerEffect(Tally(fails=1))),
    ({"contained": 1}, Verdict(P, PREV), AnswerEffect(Tally(passes=1), misses=-1)),  # not the re-asked one
])
def test_what_a_verdict_does_to_the_reputation(changes, verdict, expected):
    assert effect(row(**changes), verdict) == expected


# --- a contract at its deadline -------------------------------------------------------------------

@pytest.mark.parametrize("outstanding, run_, forgive, verdict", [
    (False, 0, None, Verdict(N)),  # answered (or nothing issued): the next challenge
    (True, 0, None, Verdict(M)),
    (True, 1, None, Verdict(M)),
    (True, 2, None, Verdict(M, failed=True)),  # the third in a row
    (False, 3, None, Verdict(N, failed=True)),  # failed answers already reached the limit
    (True, 2, (950.0, 990.0), Verdict(FG)),  # deadline 1000 within an interval after the window
    (True, 2, (950.0, 939.0), Verdict(M, failed=True)),  # just over an interval after it
    (True, 0, (1000.0, 1000.0), Verdict(M)),  # at the window's start: the pass saw it
    (False, 0, (950.0, 990.0), Verdict(N)),  # nothing outstanding: nothing to forgive
])
def test_judge_due(outstanding, run_, forgive, verdict):
    due = Due(id=1, file_id=2, run=run_, deadline=1000.0, interval=60, outstanding=outstanding)
    assert judge_due(due, 3, forgive) == verdict


def test_a_due_contract_as_the_pass_reads_it():
    assert Due._fields == ("id", "file_id", "run", "deadline", "interval", "outstanding")


# --- v1 ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("active, deadline, answered, seq, proved, why", [
    (True, 100.0, False, 3, 3, None),
    (True, 99.9, False, 3, 3, "expired"),  # expired at 99.9, the proof at 100
    (True, 100.0, True, 3, 3, "answered"),
    (True, 100.0, False, 4, 3, "answered"),  # the challenge moved on
    (False, 200.0, False, 3, 3, "expired"),  # ended
    (False, 200.0, True, 4, 3, "expired"),  # an ended contract is expired, whatever else
])
def test_why_a_verified_v1_proof_is_not_recorded(active, deadline, answered, seq, proved, why):
    assert v1_unrecorded(active, deadline, answered, seq, proved, 99.9) == why


def test_a_v1_contract_at_its_expiration():
    assert v1_at_expiry(True) == Verdict(N)
    assert v1_at_expiry(False) == Verdict(M, failed=True)
