"""Challenge windows and the downtime-forgiveness window (docs/protocol-v0.md, "Timing" and
"Downtime").

Challenge ``k`` of a v0 contract is issued at ``start + k·interval`` and due one interval later.
After a downtime of the node, the timer's first pass knows the window ``(start, end]`` in which the
node was away (``forgive``): a challenge whose deadline fell inside it, or within one interval after
it (issued late, or its window cut short, by the downtime), is forgiven — not counted as a miss.
"""

from __future__ import annotations

import math


def forgiven(forgive: tuple[float, float] | None, deadline: float, interval: float) -> bool:
    """Does the downtime ``forgive`` cover a challenge due at ``deadline``? The window is open at
    its start and closed at its end plus one interval."""
    return forgive is not None and forgive[0] < deadline <= forgive[1] + interval


def current_window(now: float, start: float, interval: float, seq: int) -> int:
    """``k``, the window of a due contract at ``now``: ``max(seq + 1, floor((now - start) /
    interval))``. ``seq + 1`` keeps the window from going back when rounding puts the pass a hair
    before the deadline."""
    return max(seq + 1, math.floor((now - start) / interval))


def window_bounds(start: float, interval: float, k: int) -> tuple[float, float]:
    """When challenge ``k`` is issued and when it is due."""
    return start + k * interval, start + (k + 1) * interval
