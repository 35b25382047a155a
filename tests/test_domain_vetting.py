"""Who gets new contracts (domain/vetting.py): eligibility, vetting, the probation mark and the
vetting share. No database, no reactor."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from downstream_tx.domain.rules import DISQUALIFIED, OK, SUSPENDED, VETTING_WINDOW, Rules
from downstream_tx.domain.vetting import (
    CONTAINED,
    NotEligible,
    Share,
    eligible,
    halved,
    probation_mark,
    share,
    urgent_first,
    vetted,
    within_share,
)

RULES = Rules(vetting_audits=10, vetting_share=0.25)


@pytest.mark.parametrize("status, contained, reason, message", [
    (DISQUALIFIED, False, "disqualified", "this farmer is disqualified: its audit score fell below the threshold"),
    (SUSPENDED, True, "suspended", "this farmer is suspended (repeated malformed requests or errors)"),
    (OK, True, "contained", "this farmer is in containment: answer the outstanding challenge first"),
])
def test_a_farmer_that_gets_no_contracts_is_told_why(status, contained, reason, message):
    with pytest.raises(NotEligible) as e:
        eligible(status, 500, 1000.0, 0.0, contained, RULES)
    assert (e.value.reason, e.value.message, str(e.value)) == (reason, message, message)
    assert CONTAINED == "contained"


@pytest.mark.parametrize("passes, alpha, beta, preferred", [
    (10, 1000.0, 0.0, True),
    (9, 1000.0, 0.0, False),  # not vetted yet
    (10, 98.0, 2.0, True),  # at the probation mark
    (10, 97.9, 2.1, False),  # on probation
])
def test_a_vetted_farmer_above_the_probation_mark_is_preferred(passes, alpha, beta, preferred):
    assert eligible(OK, passes, alpha, beta, False, RULES) is preferred


def test_the_probation_mark_is_halfway_from_the_threshold_to_one():
    assert probation_mark(Rules()) == pytest.approx(0.98)
    assert probation_mark(Rules(dq_threshold=0.5)) == 0.75
    assert vetted(100, 100) and not vetted(99, 100)


def test_the_files_in_most_danger_go_first_to_preferred_farmers_or_when_no_one_is_vetted():
    assert urgent_first(True, True) and urgent_first(False, False) and urgent_first(True, False)
    assert not urgent_first(False, True)


def test_how_an_assignment_counts():
    assert share(True, True) == Share(0, False) == share(True, False)
    assert share(False, True) == Share(1, True)
    assert share(False, False) == Share(1, False)  # no one to prefer: served, counted


def test_a_share_is_frozen():
    with pytest.raises(AttributeError):
        share(True, True).guarded = True  # type: ignore[misc]


def test_the_share_edges():
    assert within_share(3, 0, RULES)  # 1 <= 0.25 * 4
    assert not within_share(2, 0, RULES)
    assert within_share(7, 1, RULES) and not within_share(6, 1, RULES)
    assert not within_share(10**6, 0, Rules(vetting_share=0.0))


@given(total=st.integers(0, 10**6), share_=st.floats(0, 1))
def test_the_unvetted_never_take_more_than_their_share(total, share_):
    rules = Rules(vetting_share=share_)
    unvetted = 0
    for n in range(total, total + 50):
        if within_share(n, unvetted, rules):
            unvetted += 1
    assert unvetted <= share_ * (total + 50) + 1e-9 or unvetted == 0


def test_the_counters_are_halved_past_their_window():
    assert VETTING_WINDOW == 10_000.0
    assert halved(VETTING_WINDOW) and not halved(VETTING_WINDOW - 0.5)
