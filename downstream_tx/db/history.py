"""Per-hour challenge results for the dashboard's charts (table ``history``, schema step 004).

Each node process counts the passes, misses and fails it sees (the node's ``Results`` observers) per hour
and the stats job writes *its totals* for each hour it counted in, under its own ``source`` id: a
row is replaced, never incremented, so writing the same totals twice (a retried transaction, two
stats passes) changes nothing, and processes sharing one database never overwrite each other. A
chart sums the sources of each hour. Rows older than ``history_retention`` are deleted.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from downstream_tx.db.database import Database, Txn

HOUR = 3600


@dataclass(frozen=True)
class HourRow:
    hour: int  # hours since the epoch (the hour's start is hour * 3600)
    passes: int
    misses: int
    fails: int


def record_txn(txn: Txn, source: str, rows: Iterable[HourRow]) -> int:
    """Set ``source``'s totals for each hour in ``rows`` (replacing what it wrote before)."""
    rows = list(rows)
    if not rows:
        return 0
    txn.executemany("DELETE FROM history WHERE hour = ? AND source = ?", [(r.hour, source) for r in rows])
    txn.executemany("INSERT INTO history (hour, source, passes, misses, fails) VALUES (?, ?, ?, ?, ?)",
                    [(r.hour, source, r.passes, r.misses, r.fails) for r in rows])
    return len(rows)


def prune_txn(txn: Txn, before_hour: int) -> int:
    """Delete the rows of hours before ``before_hour``. Returns the rows deleted."""
    return txn.execute("DELETE FROM history WHERE hour < ?", (before_hour,)).rowcount


def hours_txn(txn: Txn, first_hour: int, last_hour: int) -> list[HourRow]:
    """Each hour in ``[first_hour, last_hour]`` that has rows, summed over sources, oldest first
    (at most ``last_hour - first_hour + 1`` rows: the primary key's prefix bounds the scan)."""
    return [HourRow(int(h), int(p or 0), int(m or 0), int(f or 0)) for h, p, m, f in txn.execute(
        "SELECT hour, SUM(passes), SUM(misses), SUM(fails) FROM history WHERE hour >= ? AND hour <= ? "
        "GROUP BY hour ORDER BY hour", (first_hour, last_hour)
    ).fetchall()]


class HistoryStore:
    def __init__(self, db: Database):
        self.db = db

    def write(self, source: str, rows: Iterable[HourRow], before_hour: int):
        """Set ``source``'s totals for the hours of ``rows`` and delete the rows of hours before
        ``before_hour``, in one transaction. Fires with the rows written."""
        rows = list(rows)

        def body(txn: Txn) -> int:
            written = record_txn(txn, source, rows)
            prune_txn(txn, before_hour)
            return written

        return self.db.run("history", body)

    def record(self, source: str, rows: Iterable[HourRow]):
        """Set ``source``'s totals for the hours of ``rows``. Fires with the rows written."""
        return self.db.run("history_record", record_txn, source, list(rows))

    def hours(self, first_hour: int, last_hour: int):
        """Fires with the summed rows of the hours in ``[first_hour, last_hour]`` (:func:`hours_txn`)."""
        return self.db.run("history_hours", hours_txn, first_hour, last_hour)
