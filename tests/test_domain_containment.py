"""Containment (domain/containment.py): a missed challenge asked again before its miss counts, on
both protocols, and the changes noted for the log. No database, no reactor."""

from __future__ import annotations

import pytest

from downstream_tx.domain.containment import (
    FAIL,
    MISS,
    PASS,
    ContainmentChange,
    ReAsk,
    changes,
    enabled,
    left,
    may_reask,
    reask_v0,
    reask_v1,
)
from downstream_tx.domain.rules import Rules

RULES = Rules(containment_retries=3)


def test_containment_is_on_with_retries():
    assert enabled(RULES) and not enabled(Rules(containment_retries=0))
    assert (PASS, FAIL, MISS) == ("pass", "fail", "miss")


@pytest.mark.parametrize("contained, again", [(0, True), (2, True), (3, False), (4, False)])
def test_a_challenge_is_asked_again_up_to_the_retries(contained, again):
    assert may_reask(contained, RULES) is again


def test_v0_asks_again_in_the_current_window():
    # start 0, interval 60, challenge 1 due at 120, the pass runs at 130
    assert reask_v0(130.0, 0.0, 60, 1, 120.0, 0, RULES, None) == ReAsk(2, 120.0, 180.0, 1)
    assert reask_v0(300.0, 0.0, 60, 1, 120.0, 2, RULES, None) == ReAsk(5, 300.0, 360.0, 3)  # late pass: window 5
    assert reask_v0(130.0, 0.0, 60, 1, 120.0, 3, RULES, None) is None  # retries used up: the miss counts
    assert reask_v0(130.0, 0.0, 60, 1, 120.0, 0, Rules(containment_retries=0), None) is None


def test_v0_a_forgiven_deadline_is_not_contained():
    assert reask_v0(130.0, 0.0, 60, 1, 120.0, 0, RULES, (100.0, 125.0)) is None
    assert reask_v0(130.0, 0.0, 60, 1, 120.0, 0, RULES, (0.0, 50.0)) == ReAsk(2, 120.0, 180.0, 1)


@pytest.mark.parametrize("now, due, contained, expected", [
    (100.0, 100.0, 0, 160.0),  # one more interval
    (130.0, 100.0, 0, 160.0),
    (160.0, 100.0, 0, 220.0),  # a whole interval passed (the node was slow): as many as passed
    (250.0, 100.0, 1, 280.0),
    (100.0, 100.0, 3, None),  # retries used up: the expiry fails it
    (100.0, None, 0, None),  # no challenge to ask again
])
def test_v1_gives_the_same_challenge_more_time(now, due, contained, expected):
    assert reask_v1(now, due, 60, contained, RULES) == expected


def test_answers_leaving_containment_are_one_change():
    assert left("a", 1, [(5, PASS), (2, FAIL)], RULES) == ContainmentChange("a", 1, (), ((2, FAIL), (5, PASS)), 3)
    assert left("a", 0, [], RULES) is None


def test_the_containment_values_are_frozen():
    with pytest.raises(AttributeError):
        ReAsk(1, 2.0, 3.0, 1).contained = 2  # type: ignore[misc]
    with pytest.raises(AttributeError):
        ContainmentChange("a", 0, (), (), 3).left = ()  # type: ignore[misc]


def test_the_changes_per_farmer():
    rows = [(1, "b", 1), (2, "b", 2), (3, "a", 1), (4, "a", 0), (5, "a", 2), (6, "c", 0)]
    settled = {3: PASS, 4: MISS, 5: FAIL, 6: PASS}
    retried = {1, 2}
    assert changes(rows, settled, retried, RULES) == [
        ContainmentChange("a", None, (), ((3, PASS), (5, FAIL)), 3),  # 4 was not contained
        ContainmentChange("b", None, (1,), (), 3),  # 2 was asked again before: already in
    ]
    assert changes([], {}, set(), RULES) == []
