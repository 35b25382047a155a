"""Challenge windows and the downtime-forgiveness window (domain/windows.py). No database, no
reactor."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from downstream_tx.domain.windows import current_window, forgiven, window_bounds


@pytest.mark.parametrize("forgive, deadline, expected", [
    (None, 1000.0, False),
    ((950.0, 990.0), 1000.0, True),  # within one interval after the downtime
    ((950.0, 990.0), 1050.0, True),  # exactly at its end plus one interval: closed
    ((950.0, 990.0), 1050.1, False),
    ((950.0, 990.0), 950.0, False),  # at its start: open (the pass before the downtime saw it)
    ((950.0, 990.0), 950.1, True),
    ((1000.0, 1000.0), 1000.0, False),
])
def test_the_edges_of_the_forgive_window(forgive, deadline, expected):
    assert forgiven(forgive, deadline, 60) is expected


def test_the_current_window():
    assert current_window(1000.0, 0.0, 60, 0) == 16
    assert current_window(1000.0, 0.0, 60, 20) == 21  # never back
    assert current_window(59.99999976, 0.0, 60, 0) == 1  # a hair before the deadline: the next one still
    assert window_bounds(100.0, 60, 3) == (280.0, 340.0)


@given(now=st.floats(0, 1e9), start=st.floats(0, 1e9), interval=st.integers(1, 86400), seq=st.integers(0, 10**6))
def test_the_window_is_never_behind_the_contract_nor_the_clock(now, start, interval, seq):
    k = current_window(now, start, interval, seq)
    assert k >= seq + 1
    assert k == max(seq + 1, math.floor((now - start) / interval))
