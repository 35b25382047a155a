"""Per-hour challenge results of this process, written to the ``history`` table by the stats job
(see ``db/history.py`` for why each process writes its own totals)."""

from __future__ import annotations

import os
from typing import Any

from downstream_tx.db.history import HOUR, HistoryStore, HourRow

#: result names counted by the node's ``Results`` → column index (a late pass is a pass; the miss the
#: timer counted before it stays in the hour it was counted in)
_COLUMNS = {"pass": 0, "late_pass": 0, "miss": 1, "fail": 2}


class HourlyResults:
    """A the node's ``Results`` observer: passes, misses and fails per hour of ``clock``."""

    def __init__(self, clock: Any, source: str | None = None):
        self.clock = clock
        #: this process's id in the history table
        self.source = source or os.urandom(8).hex()
        self.hours: dict[int, list[int]] = {}
        self._dirty: set[int] = set()

    def count(self, result: str, n: int, protocol: int = 0) -> None:
        column = _COLUMNS.get(result)
        if column is None or n <= 0:
            return
        hour = int(self.clock.seconds() // HOUR)
        self.hours.setdefault(hour, [0, 0, 0])[column] += n
        self._dirty.add(hour)

    def take(self) -> list[HourRow]:
        """The totals of the hours counted in since the last take (call :meth:`failed` with them if
        they could not be written); hours before the previous one are forgotten once taken."""
        rows = [HourRow(h, *self.hours[h]) for h in sorted(self._dirty)]
        self._dirty.clear()
        current = int(self.clock.seconds() // HOUR)
        for hour in [h for h in self.hours if h < current - 1 and h not in {r.hour for r in rows}]:
            del self.hours[hour]
        return rows

    def failed(self, rows: list[HourRow]) -> None:
        self._dirty.update(r.hour for r in rows if r.hour in self.hours)


async def write_history(store: HistoryStore, recorder: HourlyResults, retention: float, now: float) -> int:
    """Write this process's new totals and delete rows older than ``retention`` seconds."""
    rows = recorder.take()
    try:
        return await store.write(recorder.source, rows, int((now - retention) // HOUR))
    except BaseException:
        recorder.failed(rows)
        raise
