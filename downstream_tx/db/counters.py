"""Kept counters: the counts the stats job, dashboard and metrics show, kept by the writes that
change them, so reading them costs the same at 10M contracts as at 10k.

Table ``counters`` (schema step 11): ``(name, slot, n)``. A counter's value is the sum of its slots
(one slot on SQLite; :data:`~downstream_tx.db.database.COUNTER_SLOTS` on a server engine, where
each pool thread adds to its own slot so concurrent writers rarely wait on one row). A write that
changes a count calls :meth:`Txn.count <downstream_tx.db.database.Txn.count>` with the change; the
change is written at the end of the same transaction (so it commits, rolls back, is retried or
found committed by the lost-commit lookup together with the write it counts).

The counters (every other count of the stats is an index range over the rows that qualify, see
``db/stats.py``):

- ``contracts.<state>``: contracts by state (``active``, ``ended``, ``failed``), archived ones
  included (archiving moves rows, the counts do not change);
- ``unanswered.<protocol>``: active contracts whose ``answered`` is 0 (the challenges due, plus
  those past their deadline the timer has not visited yet);
- ``tokens.live``: tokens not deleted.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

from downstream_tx.db.database import COUNTER_SLOTS, Txn

ACTIVE = "contracts.active"
LIVE_TOKENS = "tokens.live"
PROTOCOLS = (0, 1)
STATES = ("active", "ended", "failed")
#: rows per statement of :func:`recount_txn`
RECOUNT_BATCH = 100_000


def state(name: str) -> str:
    """The counter of contracts in ``name`` state."""
    return f"contracts.{name}"


def unanswered(protocol: int) -> str:
    """The counter of active, unanswered contracts of ``protocol``."""
    return f"unanswered.{int(protocol)}"


def read_txn(txn: Txn) -> dict[str, int]:
    """Every counter's value (its slots summed): a read of a few dozen rows."""
    return {str(name): int(n) for name, n in txn.execute("SELECT name, SUM(n) FROM counters GROUP BY name").fetchall()}


def ending(classes: Iterable[tuple[int, int]], new_state: str) -> dict[str, int]:
    """The counter changes of active contracts of ``classes`` (``(protocol, answered)`` each) that
    move to ``new_state``."""
    out: Counter[str] = Counter()
    for protocol, answered in classes:
        out[ACTIVE] -= 1
        out[state(new_state)] += 1
        if not answered:
            out[unanswered(protocol)] -= 1
    return dict(out)


def active_classes_txn(txn: Txn, ids: Sequence[int]) -> list[tuple[int, int]]:
    """``(protocol, answered)`` of each active contract among ``ids``, locked (``FOR UPDATE``: what
    a write that follows in this transaction will change, not an older snapshot)."""
    return [(int(p), int(a)) for p, a in txn.select_in(
        "SELECT protocol, answered FROM contracts WHERE id IN {ids} AND state = 'active'" + txn.for_update(),
        sorted(ids))]


def recount_txn(txn: Txn, batch: int = RECOUNT_BATCH) -> dict[str, int]:
    """Every counter counted from the rows (what the counters must equal): the contracts in ranges
    of ``batch`` ids, one grouped statement per range, plus the archived totals and the live
    tokens. Used once, by schema step 11, to fill the counters of an existing database."""
    out: Counter[str] = Counter({state(s): 0 for s in STATES})
    for p in PROTOCOLS:
        out[unanswered(p)] = 0
    top = int(txn.scalar("SELECT MAX(id) FROM contracts") or 0)
    for low in range(0, top, batch):
        for st, protocol, answered, n in txn.execute(
            "SELECT state, protocol, answered, COUNT(*) FROM contracts WHERE id > ? AND id <= ? "
            "GROUP BY state, protocol, answered", (low, low + batch)
        ).fetchall():
            out[state(str(st))] += int(n)
            if st == "active" and not answered:
                out[unanswered(int(protocol))] += int(n)
    ended, failed = txn.execute("SELECT SUM(ended), SUM(failed) FROM contract_totals").fetchone() or (0, 0)
    out[state("ended")] += int(ended or 0)
    out[state("failed")] += int(failed or 0)
    out[LIVE_TOKENS] = int(txn.scalar("SELECT COUNT(*) FROM tokens WHERE deleted IS NULL") or 0)
    return dict(out)


def fill_txn(txn: Txn, batch: int = RECOUNT_BATCH) -> None:
    """Schema step 11: set every counter to :func:`recount_txn`'s value (in slot 0; the other
    slots of a server engine made with 0, so later writes update rows that exist)."""
    slots = 1 if txn.engine_name == "sqlite" else COUNTER_SLOTS
    txn.execute("DELETE FROM counters")
    txn.executemany("INSERT INTO counters (name, slot, n) VALUES (?, ?, ?)",
                    [(name, slot, n if slot == 0 else 0) for name, n in sorted(recount_txn(txn, batch).items())
                     for slot in range(slots)])
