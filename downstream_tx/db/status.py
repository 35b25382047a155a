"""The status API's queries and the uptime summary the uptime timer maintains.

Per token: ``uptime_start`` (first contract start seen), ``uptime_end`` (the last summary) and
``upsum`` (seconds online between them). Uptime = ``upsum / (uptime_end - uptime_start)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from downstream_tx.db.archive import latest
from downstream_tx.db.database import Database, Txn

#: sort keys of /status/list and the SQL expressions they order by (a whitelist: never user text)
SORT_COLUMNS = {
    "id": "t.farmer_id",
    "address": "t.address",
    "uptime": "uptime",
    "heartbeats": "t.hbcount",
    "contracts": "contracts",
    "size": "size",
    "online": "online",
}

#: sort keys the dashboard adds (its farmer list also orders by the farmer's standing): the reputation
#: of the token's address, joined only for these
STANDING_SORTS = {
    # disqualified, suspended (errors or offline), contained (a contract of the address is asked a missed
    # challenge again), the rest
    "standing": "CASE COALESCE(r.status, 'ok') WHEN 'disqualified' THEN 3 WHEN 'suspended' THEN 2 "
                "WHEN 'offline' THEN 2 ELSE "
                "CASE WHEN EXISTS (SELECT 1 FROM contracts cc JOIN tokens ct ON ct.id = cc.token_id "
                "WHERE cc.contained > 0 AND cc.state = 'active' AND ct.address = t.address) THEN 1 ELSE 0 END END",
    "audit": "COALESCE(r.audit_alpha / (r.audit_alpha + r.audit_beta), 1)",
}

_UPTIME = ("CASE WHEN t.uptime_end IS NOT NULL AND t.uptime_start IS NOT NULL AND t.uptime_end > t.uptime_start "
           "THEN t.upsum / (t.uptime_end - t.uptime_start) ELSE 0 END")


@dataclass(frozen=True)
class FarmerRow:
    farmer_id: str
    address: str
    location: str | None
    uptime: float  # fraction 0..1
    heartbeats: int
    contracts: int
    size: int
    online: bool
    last_due: float | None


def _farmer(row: Sequence[Any]) -> FarmerRow:
    farmer_id, address, location, uptime, hbcount, n, size, online, last_due = row
    return FarmerRow(farmer_id, address, location, float(uptime or 0), int(hbcount), int(n or 0), int(size or 0),
                     bool(online), None if last_due is None else float(last_due))


#: each token's online contracts (active, not expired) and their bytes: the kept count of its active
#: ones (``db/counters.py``) less those past their deadline, an index range (``contracts_due``) over
#: the contracts the timers have yet to visit — never every contract (``+``: grouping by the bare
#: column lets SQLite walk every contract in contracts_token's order to skip the grouping's sort)
_PAST = ("SELECT c.token_id AS token_id, COUNT(*) AS n, SUM(f.size) AS size FROM contracts c "
         "JOIN files f ON f.id = c.file_id WHERE c.state = 'active' AND c.protocol IN (0, 1) AND c.deadline <= ? "
         "GROUP BY +c.token_id")
_ONLINE_N = "t.active_contracts - COALESCE(p.n, 0)"


def farmers_txn(txn: Txn, now: float, online_only: bool, sort: str, descending: bool, limit: int | None,
                offset: int, search: str | None = None) -> list[FarmerRow]:
    """One row per live token. ``contracts``/``size`` count online contracts (active, not expired);
    the online filter and ``search`` (a case-sensitive substring of the address, for the dashboard)
    apply before LIMIT/OFFSET. ``sort``: a key of :data:`SORT_COLUMNS` or (the dashboard) of
    :data:`STANDING_SORTS`. The work grows with the live tokens and the contracts past their
    deadline, not with all contracts; ``last_due`` is read for the page's tokens only."""
    standing = sort in STANDING_SORTS
    order = (STANDING_SORTS[sort] if standing else SORT_COLUMNS[sort]) + (" DESC" if descending else "")
    sql = (
        f"SELECT t.id, t.farmer_id, t.address, t.location, {_UPTIME} AS uptime, t.hbcount, "
        f"{_ONLINE_N} AS contracts, t.active_size - COALESCE(p.size, 0) AS size, "
        f"CASE WHEN {_ONLINE_N} > 0 THEN 1 ELSE 0 END AS online, "
        "a.last_due "  # of the archived contracts (db/archive.py)
        f"FROM tokens t LEFT JOIN ({_PAST}) p ON p.token_id = t.id LEFT JOIN contract_totals a ON a.token_id = t.id"
        + (" LEFT JOIN reputation r ON r.address = t.address" if standing else "")
        + " WHERE t.deleted IS NULL"
    )
    args: list[Any] = [now]
    if online_only:
        sql += f" AND {_ONLINE_N} > 0"
    if search:
        sql += " AND INSTR(t.address, ?) > 0"
        args.append(search)
    sql += f" ORDER BY {order}, t.id"
    if limit is not None:
        sql += " LIMIT ? OFFSET ?"
        args += [limit, offset]
    rows = txn.execute(sql, args).fetchall()
    last_due = {int(t): d for t, d in txn.select_in(
        "SELECT token_id, MAX(COALESCE(due, deadline)) FROM contracts WHERE token_id IN {ids} GROUP BY token_id",
        [int(r[0]) for r in rows])}
    return [_farmer((*r[1:9], latest(last_due.get(int(r[0])), r[9]))) for r in rows]


def farmer_txn(txn: Txn, farmer_id: str, now: float) -> FarmerRow | None:
    """/status/show: ``contracts`` and ``size`` over all the token's contracts (any state)."""
    row = txn.execute(
        f"SELECT t.farmer_id, t.address, t.location, {_UPTIME}, t.hbcount, "
        "(SELECT COUNT(*) FROM contracts c WHERE c.token_id = t.id), "
        "(SELECT SUM(f.size) FROM contracts c JOIN files f ON f.id = c.file_id WHERE c.token_id = t.id), "
        "(SELECT COUNT(*) FROM contracts c WHERE c.token_id = t.id AND c.state = 'active' AND c.deadline > ?), "
        "(SELECT MAX(COALESCE(c.due, c.deadline)) FROM contracts c WHERE c.token_id = t.id), "
        "a.ended + a.failed, a.size, a.last_due "  # of the archived contracts (db/archive.py)
        "FROM tokens t LEFT JOIN contract_totals a ON a.token_id = t.id "
        "WHERE t.farmer_id = ? AND t.deleted IS NULL ORDER BY t.id LIMIT 1",
        (now, farmer_id),
    ).fetchone()
    if row is None:
        return None
    n, size, online, last_due, a_n, a_size, a_last_due = row[5:]
    return _farmer((*row[:5], int(n or 0) + int(a_n or 0), int(size or 0) + int(a_size or 0), online,
                    latest(last_due, a_last_due)))


# --- uptime ---------------------------------------------------------------------------------------

def uptime_since_txn(txn: Txn) -> float | None:
    """Where a first summary after start-up must look back to: the oldest summary end."""
    value = txn.scalar("SELECT MIN(uptime_end) FROM tokens WHERE deleted IS NULL AND uptime_end IS NOT NULL")
    return None if value is None else float(value)


#: until when a contract shows its farmer online. v1: its expiration (the due time while unanswered, one
#: interval later once answered). v0, from what the node stores of its answers: the deadline while no
#: challenge is outstanding past its deadline (``run`` 0: the last one was passed; ``contained`` 0:
#: none is being asked again; answered, the end of the next window: docs/protocol-v0.md, Timing),
#: else the start of the first window it missed or failed (``run`` + ``contained`` windows of
#: ``interval_s`` before the one ending at ``deadline``).
ONLINE_UNTIL = ("(CASE WHEN protocol = 1 OR run + contained = 0 THEN deadline "
                "ELSE deadline - (run + contained + 1) * interval_s END)")


def update_uptime_txn(txn: Txn, now: float, since: float | None) -> int:
    """Add each token's online time since its last summary, then move every summary's end to now. Both
    protocols: a contract is online from its start until :data:`ONLINE_UNTIL`.

    Online time in the window ``[uptime_end, now]`` is measured on the hull of the token's
    contracts that overlap the window (earliest start to latest expiration, clipped): grouped in
    SQL, so Python sees one row per token with live contracts, never the contracts. It equals the
    union of the contracts' online intervals unless every contract of the token was offline for a
    while *inside* one window, so the error is bounded by the timer period.
    Returns the tokens whose online time was updated.
    """
    hull: dict[int, tuple[float, float]] = {}

    def merge(rows):
        for token_id, lo, hi in rows:
            if lo is None or hi is None:
                continue
            old = hull.get(token_id)
            lo, hi = float(lo), float(hi)
            hull[token_id] = (lo, hi) if old is None else (min(old[0], lo), max(old[1], hi))

    merge(txn.execute(
        f"SELECT token_id, MIN(start), MAX({ONLINE_UNTIL}) FROM contracts WHERE state = 'active' GROUP BY token_id"
    ).fetchall())
    if since is not None:
        merge(txn.execute(
            f"SELECT token_id, MIN(start), MAX(CASE WHEN ended < {ONLINE_UNTIL} THEN ended ELSE {ONLINE_UNTIL} END) "
            "FROM contracts WHERE ended > ? AND state <> 'active' GROUP BY token_id",
            (since,),
        ).fetchall())
    ids = sorted(hull)
    updates = []
    # locked: a second summary at once waits, then reads the ends this one moved (adds nothing twice)
    for token_id, start, end in txn.select_in(
        "SELECT id, uptime_start, uptime_end FROM tokens WHERE deleted IS NULL AND id IN {ids}" + txn.for_update(), ids
    ):
        lo, hi = hull[token_id]
        window_start = lo if end is None else max(lo, float(end))
        online = max(0.0, min(hi, now) - window_start)
        updates.append((lo if start is None else start, online, now, token_id))
    txn.executemany("UPDATE tokens SET uptime_start = ?, upsum = upsum + ?, uptime_end = ? WHERE id = ?", updates)
    txn.execute(
        "UPDATE tokens SET uptime_end = ? WHERE uptime_start IS NOT NULL AND deleted IS NULL "
        "AND (uptime_end IS NULL OR uptime_end < ?)",
        (now, now),
    )
    return len(updates)


class StatusStore:
    def __init__(self, db: Database):
        self.db = db

    def farmers(self, now: float, online_only: bool, sort: str, descending: bool, limit: int | None, offset: int,
                search: str | None = None):
        """Fires with one page of :class:`FarmerRow` (see :func:`farmers_txn`)."""
        return self.db.run("status_list", farmers_txn, now, online_only, sort, descending, limit, offset,
                           search or None)

    def farmer(self, farmer_id: str, now: float):
        """Fires with the farmer's :class:`FarmerRow`, or None."""
        return self.db.run("status_show", farmer_txn, farmer_id, now)

    def update_uptime(self, now: float, since: float | None, first: bool):
        """Add online time since the last summary (the first summary after a start looks back to
        the oldest stored summary end instead of ``since``). Fires with the tokens updated."""

        def body(txn: Txn) -> int:
            return update_uptime_txn(txn, now, uptime_since_txn(txn) if first else since)

        return self.db.run("v1_uptime", body)
