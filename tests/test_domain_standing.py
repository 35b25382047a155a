"""A farmer's standing (domain/standing.py): which tallies can change it, what they change it to,
the grace of a suspension and the operator's reinstatement. No database, no reactor."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from downstream_tx.domain.rules import DISQUALIFIED, INITIAL_ALPHA, OK, SUSPENDED, Rules
from downstream_tx.domain.scores import Scores, Tally, apply, below
from downstream_tx.domain.standing import (
    GRACE_REASON,
    REINSTATABLE,
    REINSTATED_REASON,
    Standing,
    StandingChange,
    decide,
    dq_reason,
    grace_cutoff,
    grace_expired,
    may_change,
    reinstated,
    suspension_reason,
)

RULES = Rules()
LOW_AUDIT = Scores(audit=(95.0, 5.0))  # 0.95 < 0.96
LOW_UNKNOWN = Scores(unknown=(50.0, 50.0))  # 0.5 < 0.6
BOTH_LOW = Scores(audit=(95.0, 5.0), unknown=(50.0, 50.0))


def test_the_reasons_name_the_thresholds():
    assert dq_reason(RULES) == "audit score below 0.96"
    assert suspension_reason(Rules(suspension_threshold=0.25)) == "unknown-error score below 0.25"
    assert GRACE_REASON == "suspended for longer than suspension_grace"
    assert REINSTATED_REASON == "reinstated by the operator"
    assert REINSTATABLE == (DISQUALIFIED, SUSPENDED)


@pytest.mark.parametrize("tally, status, can", [
    (Tally(passes=5, retries=3), OK, False),  # successes and re-asks: nothing to decide
    (Tally(passes=5), SUSPENDED, True),  # may recover
    (Tally(), SUSPENDED, True),
    (Tally(fails=1), OK, True),
    (Tally(misses=1), OK, True),
    (Tally(errors=1), OK, True),
    (Tally(retries=1), DISQUALIFIED, False),
])
def test_which_tallies_may_change_a_standing(tally, status, can):
    assert may_change(tally, status) is can


@pytest.mark.parametrize("status, after, tally, expected", [
    (OK, LOW_AUDIT, Tally(fails=1), Standing(DISQUALIFIED, "audit score below 0.96")),
    (OK, LOW_AUDIT, Tally(misses=1), Standing(DISQUALIFIED, "audit score below 0.96")),
    (SUSPENDED, LOW_AUDIT, Tally(misses=1), Standing(DISQUALIFIED, "audit score below 0.96")),
    (DISQUALIFIED, LOW_AUDIT, Tally(fails=1), None),  # already
    (OK, LOW_AUDIT, Tally(passes=1), None),  # no audit failure in this tally: not this one's doing
    (OK, Scores(), Tally(fails=1), None),
    (OK, Scores(audit=(96.0, 4.0)), Tally(fails=1), None),  # at the threshold: not below
    (OK, LOW_UNKNOWN, Tally(errors=1), Standing(SUSPENDED, "unknown-error score below 0.6")),
    (OK, BOTH_LOW, Tally(fails=1, errors=1), Standing(DISQUALIFIED, "audit score below 0.96")),  # dq first
    (SUSPENDED, LOW_UNKNOWN, Tally(errors=1), None),  # already
    (OK, LOW_UNKNOWN, Tally(passes=1), None),  # no error in this tally
    (OK, Scores(unknown=(60.0, 40.0)), Tally(errors=1), None),  # at the threshold
    (SUSPENDED, Scores(unknown=(60.0, 40.0)), Tally(passes=1), Standing(OK, None)),  # recovers at it
    (SUSPENDED, Scores(unknown=(60.0, 40.0)), Tally(fails=1), Standing(OK, None)),  # a fail is an answer too
    (SUSPENDED, LOW_UNKNOWN, Tally(passes=1), None),
    (SUSPENDED, Scores(), Tally(retries=1), None),  # no answer: no recovery
    (DISQUALIFIED, Scores(), Tally(passes=1), None),  # only the operator lifts it
])
def test_what_a_tally_decides(status, after, tally, expected):
    assert decide(status, after, tally, RULES) == expected


@given(status=st.sampled_from([OK, SUSPENDED, DISQUALIFIED]),
       counts=st.tuples(*[st.integers(0, 60)] * 5),
       audit=st.tuples(st.floats(0, 2000), st.floats(0, 2000)),
       unknown=st.tuples(st.floats(0, 2000), st.floats(0, 2000)),
       dq=st.floats(0, 1), st_=st.floats(0, 1))
def test_a_standing_changes_only_as_documented(status, counts, audit, unknown, dq, st_):
    rules = Rules(dq_threshold=dq, suspension_threshold=st_)
    tally = Tally(*counts)
    after = apply(Scores(audit=audit, unknown=unknown), tally)
    change = decide(status, after, tally, rules)
    if not may_change(tally, status):
        assert change is None
    if change is None:
        return
    assert change.status != status
    if change.status == DISQUALIFIED:
        assert tally.fails + tally.misses and below(*after.audit, dq)
    elif change.status == SUSPENDED:
        assert status == OK and tally.errors and below(*after.unknown, st_)
    else:
        assert status == SUSPENDED and tally.passes + tally.fails and not below(*after.unknown, st_)


def test_the_decisions_are_frozen():
    for value in (Standing(OK, None), StandingChange("a", OK, SUSPENDED, "why")):
        with pytest.raises(AttributeError):
            value.status = DISQUALIFIED  # type: ignore[misc]
        with pytest.raises(AttributeError):
            value.after = DISQUALIFIED  # type: ignore[misc]


def test_a_suspension_ends_in_disqualification_after_its_grace():
    rules = Rules(suspension_grace=100.0)
    assert grace_cutoff(1000.0, rules) == 900.0
    assert grace_expired(SUSPENDED, 900.0, 1000.0, rules)
    assert not grace_expired(SUSPENDED, 900.5, 1000.0, rules)
    assert not grace_expired(OK, 0.0, 1000.0, rules)
    assert not grace_expired(SUSPENDED, None, 1000.0, rules)


def test_a_reinstated_farmer_starts_afresh_but_keeps_its_online_score():
    before = Scores(audit=(1.0, 2.0), online=(3.0, 4.0), unknown=(5.0, 6.0))
    # the unknown score afresh at the steady state of its own factor (0.98 by default: 1 / 0.02 = 50)
    fresh = reinstated(before)
    assert (fresh.audit, fresh.online) == ((INITIAL_ALPHA, 0.0), (3.0, 4.0)) and fresh.unknown == pytest.approx((50, 0))
    assert reinstated(before, Rules(unknown_lam=0.999)).unknown == pytest.approx((INITIAL_ALPHA, 0.0))
