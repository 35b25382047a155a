"""Who gets new contracts (domain/vetting.py): eligibility, vetting, the probation mark and the
vetting share. No database, no reactor."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from downstream_tx.domain import vetting
from downstream_tx.domain.rules import DISQUALIFIED, OFFLINE, OK, SUSPENDED, Rules
from downstream_tx.domain.vetting import (
    CONTAINED,
    NotEligible,
    Share,
    counted,
    eligible,
    keep,
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
    (OFFLINE, False, "offline", "this farmer is suspended for being offline: its online score is below the "
                                "offline_threshold; it is lifted once the score is back"),
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
    assert share(False, False) == Share(0, False, counted=False)  # no one to prefer: served, not counted


def test_a_share_is_frozen():
    with pytest.raises(AttributeError):
        share(True, True).guarded = True  # type: ignore[misc]


def test_the_share_edges():
    # the counters forget 1/vetting_window per assignment: d = 0.999 here (unvetted·d + 1 <= 0.25 (total·d + 1))
    assert within_share(3.01, 0, RULES) and not within_share(3, 0, RULES)
    assert not within_share(2, 0, RULES)
    assert within_share(7.1, 1, RULES) and not within_share(6, 1, RULES)
    assert not within_share(10**6, 0, Rules(vetting_share=0.0))


@given(total=st.integers(0, 10**6), share_=st.floats(0, 1))
def test_the_unvetted_never_take_more_than_their_share(total, share_):
    rules = Rules(vetting_share=share_)
    unvetted = 0
    for n in range(total, total + 50):
        if within_share(n, unvetted, rules):
            unvetted += 1
    assert unvetted <= share_ * (total + 50) + 1e-9 or unvetted == 0


def test_the_counters_forget_one_over_the_window_per_assignment():
    assert keep(RULES) == pytest.approx(0.999)
    assert counted(100.0, 5.0, True, RULES) == pytest.approx((100 * 0.999 + 1, 5 * 0.999 + 1))
    assert counted(100.0, 5.0, False, RULES) == pytest.approx((100 * 0.999 + 1, 5 * 0.999))


def test_the_shortest_window_the_configuration_allows():
    # vetting_window 2 (the configuration's minimum): d = 0.5, so the edges are exact in floating point
    rules = Rules(vetting_share=0.5, vetting_window=2)
    assert keep(rules) == 0.5
    assert within_share(10, 4, rules)  # 4·0.5 + 1 = 3 = 0.5·(10·0.5 + 1): exactly at the share
    assert not within_share(10, 4.5, rules)
    assert within_share(10, 3, rules) and not within_share(3, 3, rules)
    assert keep(Rules(vetting_window=1)) == 0.0  # a window of one assignment (or less) keeps nothing


# --- the share of the recent assignments (issue 24) ---------------------------------------------

V = Rules(vetting_audits=100, vetting_share=0.05, vetting_window=1000, vetting_min_age=3600, dq_threshold=0.96)


def test_preferred_needs_passes_the_probation_mark_and_the_age():
    def pref(passes, score, age):  # an audit score as (alpha, beta)
        return vetting.preferred(passes, score * 1000, (1 - score) * 1000, age, V)

    assert pref(100, 0.98, 3600)
    assert not pref(99, 1.0, 1e9)
    assert not pref(100, 0.979, 1e9)
    assert not pref(100, 1.0, 3599)
    assert vetting.probation_mark(V) == pytest.approx(0.98)


def test_an_offline_farmer_is_not_eligible():
    with pytest.raises(vetting.NotEligible) as e:
        vetting.eligible(OFFLINE, 500, 1000.0, 0.0, False, V)
    assert e.value.reason == OFFLINE


def test_nothing_is_counted_while_nobody_is_vetted():
    assert vetting.share(False, anyone_vetted=False) == vetting.Share(0, False, counted=False)
    assert vetting.share(False, anyone_vetted=True) == vetting.Share(1, True)
    assert vetting.share(True, anyone_vetted=True) == vetting.Share(0, False)


@given(st.integers(1, 5000))
def test_a_new_farmer_gets_a_contract_within_about_one_over_share_assignments(n_vetted):
    """However many assignments went before (all to vetted farmers, or the counters anywhere), the
    share lets one through after at most ~1/share more."""
    total, unvetted = 0.0, 0.0
    for _ in range(n_vetted):
        total, unvetted = vetting.counted(total, unvetted, False, V)
    waited = 0
    while not vetting.within_share(total, unvetted, V):
        total, unvetted = vetting.counted(total, unvetted, False, V)
        waited += 1
    assert waited <= math.ceil(1 / V.vetting_share)


@given(st.lists(st.booleans(), max_size=3000))
def test_the_share_of_recent_assignments_holds(wants):
    """Assignments to farmers not vetted go through only while they stay within the share of the
    forgetting counters."""
    total = unvetted = 0.0
    for to_unvetted in wants:
        if to_unvetted and not vetting.within_share(total, unvetted, V):
            continue
        total, unvetted = vetting.counted(total, unvetted, to_unvetted, V)
        assert unvetted <= V.vetting_share * total + 1e-9
