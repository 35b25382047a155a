"""The dashboard's queries beyond the status API's (``db/status.py``) and the gauges' (``db/stats.py``).

Each returns a bounded number of rows: kept counters (``db/counters.py``), counts grouped over
indexed columns, or a page with LIMIT. None reads the contracts table through (the farmers online:
one index seek per live token). :class:`OverviewStore` runs each page part in one transaction.
"""

from __future__ import annotations

from dataclasses import dataclass

from downstream_tx.db import counters
from downstream_tx.db.archive import totals_txn
from downstream_tx.db.database import Database, Txn
from downstream_tx.db.history import HourRow, hours_txn
from downstream_tx.db.stats import WITH_ACTIVE, Counts, counts_txn


def farmers_total_txn(txn: Txn) -> int:
    """Live tokens (one status-list entry each): a kept counter."""
    return counters.read_txn(txn).get(counters.LIVE_TOKENS, 0)


#: live tokens with an online contract: one seek per token into ``contracts_token``
FARMERS_ONLINE = WITH_ACTIVE.format(" AND c.deadline > ?")


def farmers_online_txn(txn: Txn, now: float) -> int:
    """Live tokens with an online contract (active, not expired): the status list's ``online``."""
    return int(txn.scalar(FARMERS_ONLINE, (now,)) or 0)


def countries_txn(txn: Txn, limit: int = 30) -> list[tuple[str, int]]:
    """Live tokens per GeoIP country, most first (tokens without a known country are not counted)."""
    return [(str(c), int(n)) for c, n in txn.execute(
        "SELECT country, COUNT(*) AS n FROM tokens WHERE deleted IS NULL AND country IS NOT NULL "
        "GROUP BY country ORDER BY n DESC, country LIMIT ?", (limit,)
    ).fetchall()]


@dataclass(frozen=True)
class UnderReplicated:
    file_hash: str
    size: int
    redundancy: int
    replicas: int


def under_replicated_txn(txn: Txn, limit: int = 20) -> tuple[int, list[UnderReplicated]]:
    """Stored files with fewer replicas than their redundancy target: how many, and the ``limit``
    furthest below it. Both read only the files below their target (indexes files_missing and
    files_urgent on ``missing`` = redundancy - replicas: schema step 13)."""
    where = "FROM files WHERE removed IS NULL AND kind = 'stored' AND missing > 0"
    total = int(txn.scalar(f"SELECT COUNT(*) {where}") or 0)
    rows = [UnderReplicated(str(h), int(s), int(r), int(n)) for h, s, r, n in txn.execute(
        f"SELECT file_hash, size, redundancy, replicas {where} ORDER BY missing DESC, id LIMIT ?",
        (limit,)
    ).fetchall()]
    return total, rows


@dataclass(frozen=True)
class ContractRow:
    id: int
    file_hash: str
    protocol: int
    size: int
    passes: int
    misses: int
    fails: int
    run: int  # consecutive misses/fails
    deadline: float | None
    answered: bool


def at_risk_txn(txn: Txn, farmer_id: str, limit: int = 20) -> list[ContractRow]:
    """The farmer's active contracts closest to failing: longest run of misses/fails first, then
    unanswered before answered, then the nearest deadline."""
    return [ContractRow(int(i), str(h), int(p), int(s), int(a), int(m), int(f), int(r),
                        None if d is None else float(d), bool(ans))
            for i, h, p, s, a, m, f, r, d, ans in txn.execute(
                "SELECT c.id, f.file_hash, c.protocol, f.size, c.passes, c.misses, c.fails, c.run, "
                "COALESCE(c.due, c.deadline), c.answered FROM tokens t "
                "JOIN contracts c ON c.token_id = t.id AND c.state = 'active' JOIN files f ON f.id = c.file_id "
                "WHERE t.farmer_id = ? AND t.deleted IS NULL "
                "ORDER BY c.run DESC, c.answered, COALESCE(c.due, c.deadline), c.id LIMIT ?", (farmer_id, limit)
            ).fetchall()]


def farmer_results_txn(txn: Txn, farmer_id: str) -> dict[str, int]:
    """Contracts by state and passes/misses/fails summed over the farmer's live tokens' contracts."""
    out = {"active": 0, "ended": 0, "failed": 0, "passes": 0, "misses": 0, "fails": 0}
    for state, n, p, m, f in txn.execute(
        "SELECT c.state, COUNT(*), SUM(c.passes), SUM(c.misses), SUM(c.fails) FROM tokens t "
        "JOIN contracts c ON c.token_id = t.id WHERE t.farmer_id = ? AND t.deleted IS NULL GROUP BY c.state",
        (farmer_id,)
    ).fetchall():
        out[str(state)] = out.get(str(state), 0) + int(n)
        out["passes"] += int(p or 0)
        out["misses"] += int(m or 0)
        out["fails"] += int(f or 0)
    ids = [r[0] for r in txn.execute("SELECT id FROM tokens WHERE farmer_id = ? AND deleted IS NULL",
                                     (farmer_id,)).fetchall()]
    for archived in totals_txn(txn, ids).values():  # contracts archiving moved out
        for key in ("ended", "failed", "passes", "misses", "fails"):
            out[key] += getattr(archived, key)
    return out


@dataclass(frozen=True)
class OverviewCounts:
    """What the dashboard's overview reads from the database, read in one transaction."""

    counts: Counts
    farmers_online: int
    farmers_total: int
    under_replicated: int
    under_rows: list[UnderReplicated]
    countries: list[tuple[str, int]]
    hours: list[HourRow]


@dataclass(frozen=True)
class FarmerStanding:
    results: dict[str, int]
    at_risk: list[ContractRow]


class OverviewStore:
    def __init__(self, db: Database):
        self.db = db

    def overview(self, now: float, grace: float, first_hour: int, last_hour: int):
        """Fires with the :class:`OverviewCounts` at ``now`` (``grace``: see ``db/stats.py``), with
        the history of the hours in ``[first_hour, last_hour]``."""

        def body(txn: Txn) -> OverviewCounts:
            under, under_rows = under_replicated_txn(txn)
            return OverviewCounts(counts_txn(txn, now, grace), farmers_online_txn(txn, now), farmers_total_txn(txn),
                                  under, under_rows, countries_txn(txn), hours_txn(txn, first_hour, last_hour))

        return self.db.run("dashboard", body)

    def farmer(self, farmer_id: str):
        """Fires with the farmer's :class:`FarmerStanding` (its results and contracts at risk)."""

        def body(txn: Txn) -> FarmerStanding:
            return FarmerStanding(farmer_results_txn(txn, farmer_id), at_risk_txn(txn, farmer_id))

        return self.db.run("dashboard_farmer", body)
