"""domain/online.py: offline kept apart from failing — last_seen writes, active or offline in a
challenge's window, online windows, the offline suspension. Pure: no database, no reactor."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from downstream_tx.domain import online
from downstream_tx.domain.rules import OFFLINE, OK, OnlineRules

W = OnlineRules(window=100.0, lam=0.9, threshold=0.5, grace=300.0, seen_every=10.0)


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


def test_seen_online_is_a_request_in_the_last_window_given_the_lag():
    assert online.seen_online(1000.0, 1000.0, W)
    assert online.seen_online(890.0, 1000.0, W)  # window (100) + seen_every (10) ago
    assert not online.seen_online(889.0, 1000.0, W)
    assert not online.seen_online(None, 1000.0, W)


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
    assert online.offline_change(OK, 0.4, 700.0, 1000.0, W) == OFFLINE  # exactly the grace: past it
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


def test_a_count_of_windows_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        online.Windows(1, 2, 3).failures = 0  # type: ignore[misc]
