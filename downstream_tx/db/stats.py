"""Cheap counts for monitoring: the health ping and the gauges behind ``/metrics``.

Run by the stats job every ``stats_interval`` seconds (never per scrape) and by the dashboard's
overview. None reads the contracts table through: the counts by state and of unanswered
challenges are kept counters (``db/counters.py``, kept by the writes that change them); the counts
that are "as of now" are index range scans over the rows that qualify only (``contracts_due`` =
state, protocol, deadline: the contracts past their deadline, i.e. what the timers still have to
visit); the distinct farmers are one index seek per live token (``contracts_token``), so they
grow with the farmers, not with their contracts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from downstream_tx.db import counters, reputation
from downstream_tx.db.database import Database, Txn


def ping_txn(txn: Txn) -> int:
    """``SELECT 1``: the database answers."""
    return int(txn.scalar("SELECT 1"))


@dataclass
class Counts:
    #: contracts by state ("active", "ended", "failed"; archived ones included)
    contracts: dict[str, int] = field(default_factory=dict)
    #: outstanding (unanswered, deadline ahead) challenges by protocol (0, 1)
    due: dict[int, int] = field(default_factory=dict)
    #: active contracts whose deadline passed more than ``grace`` seconds ago, by protocol
    overdue: dict[int, int] = field(default_factory=dict)
    #: distinct tokens with an active contract that is not in a run of misses/fails
    farmers_online: int = 0
    #: distinct tokens with any active contract
    farmers_active: int = 0
    #: ready seeded chunks by size in bytes
    pool: dict[int, int] = field(default_factory=dict)
    #: farmers (addresses) by standing: ok, suspended, disqualified, contained, unvetted
    standing: dict[str, int] = field(default_factory=dict)


#: the statements of :func:`counts_txn` that touch contracts (a test checks their plans: no scan)
#: active unanswered contracts of a protocol whose deadline has passed (the timer's backlog)
PAST_UNANSWERED = ("SELECT COUNT(*) FROM contracts WHERE state = 'active' AND protocol = ? AND deadline <= ? "
                   "AND answered = 0")
#: active contracts of a protocol whose deadline passed before ``?``
PAST = "SELECT COUNT(*) FROM contracts WHERE state = 'active' AND protocol = ? AND deadline <= ?"
#: live tokens with an active contract (a seek per token) … (a scalar subquery, not EXISTS: MariaDB
#: turns an EXISTS into a semi-join that may first read every contract)
WITH_ACTIVE = ("SELECT COUNT(*) FROM tokens t WHERE t.deleted IS NULL AND (SELECT 1 FROM contracts c "
               "WHERE c.token_id = t.id AND c.state = 'active'{} LIMIT 1) IS NOT NULL")
#: … and those with one not in a run of misses or fails
FARMERS_ACTIVE = WITH_ACTIVE.format("")
FARMERS_ONLINE = WITH_ACTIVE.format(" AND c.run = 0")


def counts_txn(txn: Txn, now: float, grace: float, vetting_audits: int = 100) -> Counts:
    counts = Counts()
    kept = counters.read_txn(txn)
    # (as the grouped counts these replace: only the states and protocols with any)
    for state in counters.STATES:  # archived contracts included (they keep their count when archived)
        if kept.get(counters.state(state)):
            counts.contracts[state] = kept[counters.state(state)]
    for protocol in counters.PROTOCOLS:
        # unanswered ones whose deadline is ahead: the kept count less those past it (an index range)
        due = kept.get(counters.unanswered(protocol), 0) - int(txn.scalar(PAST_UNANSWERED, (protocol, now)) or 0)
        overdue = int(txn.scalar(PAST, (protocol, now - grace)) or 0)
        if due:
            counts.due[protocol] = due
        if overdue:
            counts.overdue[protocol] = overdue
    counts.farmers_online = int(txn.scalar(FARMERS_ONLINE) or 0)
    counts.farmers_active = int(txn.scalar(FARMERS_ACTIVE) or 0)
    for size, n in txn.execute("SELECT size, COUNT(*) FROM seeded_pool GROUP BY size").fetchall():
        counts.pool[int(size)] = int(n)
    counts.standing = reputation.counts_txn(txn, vetting_audits)
    return counts


class StatsStore:
    def __init__(self, db: Database):
        self.db = db

    def ping(self):
        """Fires when the database answers ``SELECT 1``."""
        return self.db.run("ping", ping_txn)

    def counts(self, now: float, grace: float, vetting_audits: int = 100):
        """Fires with the monitoring :class:`Counts` (``vetting_audits``: passes that vet a farmer)."""
        return self.db.run("stats", counts_txn, now, grace, vetting_audits)
