"""The fair-verdict rules as pure functions (downstream_tx/domain: online.py, placement.py, and
vetting.py's share of recent assignments): no database, no reactor."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from downstream_tx.domain import online, placement, vetting
from downstream_tx.domain.rules import OFFLINE, OK, OnlineRules, Rules

W = OnlineRules(window=100.0, lam=0.9, threshold=0.5, grace=300.0, seen_every=10.0)


# --- online -----------------------------------------------------------------------------------------

def test_a_request_writes_last_seen_only_past_seen_every_or_a_new_window():
    assert online.should_record(None, 1000.0, W)
    assert not online.should_record(1000.0, 1005.0, W)
    assert not online.should_record(1000.0, 1010.0, W)  # exactly seen_every later: not yet
    assert online.should_record(1000.0, 1010.5, W)
    assert online.should_record(1095.0, 1100.0, W)  # the first request of window 11


@given(st.lists(st.floats(0, 10_000), min_size=1, max_size=200))
def test_recorded_last_seen_lags_the_last_request_by_at_most_seen_every(times):
    """Whatever the requests, the stored time is within ``seen_every`` of the latest request and in its
    online window: what ``was_active`` and ``count_windows`` rely on."""
    stored = None
    for t in sorted(times):
        if online.should_record(stored, t, W):
            stored = t
    last = max(times)
    assert last - W.seen_every <= stored <= last
    assert online.window_of(stored, W) == online.window_of(last, W)


def test_was_active_gives_the_stored_time_its_lag():
    assert online.was_active(900.0, deadline=1000.0, interval=100.0, rules=W)
    assert online.was_active(890.0, deadline=1000.0, interval=100.0, rules=W)
    assert not online.was_active(889.0, deadline=1000.0, interval=100.0, rules=W)
    assert not online.was_active(None, deadline=1000.0, interval=100.0, rules=W)
    assert online.was_active(1500.0, deadline=1000.0, interval=100.0, rules=W)  # back since: contained


def test_windows_seen_then_offline_each_counted_once():
    # counted up to window 3; now in window 10; last request in window 6: 4, 5, 6 seen, 7, 8, 9 not
    assert online.count_windows(3, 650.0, 1000.0, W) == online.Windows(3, 3, 9)
    assert online.count_windows(9, 650.0, 1050.0, W) == online.Windows(0, 0, 9)  # nothing new
    assert online.count_windows(None, None, 1000.0, W) == online.Windows(0, 0, 9)  # a new farmer: from now on
    assert online.count_windows(3, None, 1000.0, W) == online.Windows(0, 6, 9)


@given(st.floats(0, 100), st.floats(0, 100), st.integers(0, 50), st.integers(0, 50), st.floats(0.5, 1.0))
def test_decay_is_successes_then_failures_one_at_a_time(alpha, beta, k, m, lam):
    a, b = alpha, beta
    for success in [True] * k + [False] * m:
        a, b = lam * a + success, lam * b + (not success)
    got = online.decay(alpha, beta, k, m, lam)
    assert got == pytest.approx((a, b), rel=1e-9, abs=1e-9)


def test_offline_suspension_needs_the_threshold_and_the_grace_and_lifts_at_the_threshold():
    assert online.offline_change(OK, 0.4, 600.0, 1000.0, W) == OFFLINE
    assert online.offline_change(OK, 0.4, 800.0, 1000.0, W) is None  # seen 200 s ago: within the grace
    assert online.offline_change(OK, 0.5, None, 1000.0, W) is None
    assert online.offline_change(OFFLINE, 0.5, 999.0, 1000.0, W) == OK
    assert online.offline_change("suspended", 0.1, None, 1000.0, W) is None  # not this rule's
    assert online.offline_change(OK, 0.0, None, 1000.0, OnlineRules(threshold=0.0)) is None  # 0: never


def test_a_farmer_suspended_offline_loses_nothing_more_while_away():
    w = online.Windows(2, 5, 9)
    assert online.counted_for(OFFLINE, w) == online.Windows(2, 0, 9)
    assert online.counted_for(OK, w) == w


def test_the_defaults_suspend_a_silent_farmer_within_a_day():
    rules = online.DEFAULT_ONLINE
    alpha, beta, hours = 1 / (1 - rules.lam), 0.0, 0
    while online.score(alpha, beta) >= rules.threshold:
        alpha, beta = online.decay(alpha, beta, 0, 1, rules.lam)
        hours += rules.window / 3600
    assert hours == 23 and rules.grace <= hours * 3600


# --- placement --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("ip", "network"), [
    ("203.0.113.77", "203.0.113.0/24"),
    ("::ffff:203.0.113.9", "203.0.113.0/24"),  # IPv4-mapped: its IPv4 address
    ("2001:db8:1:ffff::2", "2001:db8:1::/48"),
    ("fe80::1%eth0", "fe80::/48"),
    ("not an address", None),
    ("", None),
    (None, None),
])
def test_the_network_of_an_address(ip, network):
    assert placement.network_of(ip, placement.PlacementRules()) == network


def test_prefix_lengths_and_the_off_switch():
    assert placement.network_of("203.0.113.77", placement.PlacementRules(v4_prefix=16)) == "203.0.0.0/16"
    assert placement.network_of("2001:db8:1:2::1", placement.PlacementRules(v6_prefix=64)) == "2001:db8:1:2::/64"
    assert placement.network_of("203.0.113.77", placement.PlacementRules(distinct_networks=False)) is None
    key = placement.network_key("203.0.113.77", placement.PlacementRules())
    assert key == placement.network_key("203.0.113.1", placement.PlacementRules()) and len(key) == 32
    assert "203" not in key or key.isalnum()  # a hash, not the address


def test_may_hold_distinct_addresses_and_networks():
    holders = [("a", "n1"), ("b", None)]
    assert not placement.may_hold("a", "n9", holders)
    assert not placement.may_hold("c", "n1", holders)
    assert placement.may_hold("c", "n2", holders)
    assert placement.may_hold("c", None, holders)  # networks not compared


# --- vetting by a share of recent assignments -------------------------------------------------------

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
