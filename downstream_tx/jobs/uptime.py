"""The uptime summary: every few seconds, add each token's online time since the last summary
(``db/status.py``), for the status API's and the dashboard's uptime.

The first summary a :class:`UptimeSummary` makes looks back to the oldest summary end stored (the
node was down, or another instance made the summaries meanwhile); the next ones from its own last.
The jobs leader makes a new one for each term of the jobs lease.
"""

from __future__ import annotations

from typing import Any

from downstream_tx.db.status import StatusStore

NAME = "uptime"
#: seconds between uptime summaries at most (the bound on the summary's error, see db/status.py)
PERIOD = 30.0


class UptimeSummary:
    """The body of the uptime job, with the end of its last summary."""

    def __init__(self, status: StatusStore, clock: Any):
        self.status = status
        self.clock = clock
        #: the end of the last summary this one made (None before the first)
        self.since: float | None = None
        self.ran = False

    async def __call__(self) -> int:
        """Add every token's online time since the last summary; the tokens updated."""
        now = self.clock.seconds()
        updated = await self.status.update_uptime(now, self.since, first=not self.ran)
        self.since, self.ran = now, True
        return updated


def interval(tick: float, seeded_interval: float) -> float:
    """Seconds between summaries: at most :data:`PERIOD` and one v1 interval, at least one tick."""
    return max(tick, min(PERIOD, seeded_interval))
