"""Cheap counts for monitoring: the health ping and the gauges behind ``/metrics``.

Every query is a COUNT over an indexed prefix (``contracts_due`` = state, protocol, deadline;
``seeded_pool_size``), run by the stats job every ``stats_interval`` seconds, never per scrape.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from downstream_tx.db import reputation
from downstream_tx.db.archive import state_totals_txn
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


def counts_txn(txn: Txn, now: float, grace: float, vetting_audits: int = 100) -> Counts:
    counts = Counts()
    for state, n in txn.execute("SELECT state, COUNT(*) FROM contracts GROUP BY state").fetchall():
        counts.contracts[str(state)] = int(n)
    for state, n in state_totals_txn(txn).items():  # archived contracts still count (db/archive.py)
        if n:
            counts.contracts[state] = counts.contracts.get(state, 0) + n
    for protocol, n in txn.execute(
        "SELECT protocol, COUNT(*) FROM contracts WHERE state = 'active' AND deadline > ? AND answered = 0 "
        "GROUP BY protocol", (now,)
    ).fetchall():
        counts.due[int(protocol)] = int(n)
    for protocol, n in txn.execute(
        "SELECT protocol, COUNT(*) FROM contracts WHERE state = 'active' AND deadline <= ? GROUP BY protocol",
        (now - grace,),
    ).fetchall():
        counts.overdue[int(protocol)] = int(n)
    counts.farmers_online = int(txn.scalar(
        "SELECT COUNT(DISTINCT token_id) FROM contracts WHERE state = 'active' AND run = 0") or 0)
    counts.farmers_active = int(txn.scalar(
        "SELECT COUNT(DISTINCT token_id) FROM contracts WHERE state = 'active'") or 0)
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
