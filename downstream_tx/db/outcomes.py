"""The ``txn_outcomes`` table (schema step 010): the ids of committed write transactions, kept
for as long as a retry may need to look one up, then purged.

:class:`~downstream_tx.db.database.Database` writes a transaction's id in the transaction's own
commit where the engine's commits can be lost (MySQL/MariaDB), and looks it up when the
acknowledgement of a COMMIT was lost (``record_outcome_txn``, ``committed_attempt_txn`` there). A
lookup happens within the one ``run`` call that wrote the id, so ids older than :data:`KEEP`
seconds are never looked up again: :func:`purge_txn` deletes them by primary key range (ids begin
with their time), a bounded batch per transaction.
"""

from __future__ import annotations

from dataclasses import dataclass

from downstream_tx.db.database import Database, Txn

#: seconds an id is kept: far longer than one ``run`` with every retry (each attempt is bounded by
#: the connection's read timeout and the server's lock wait timeout)
KEEP = 900.0


@dataclass
class PurgeResult:
    deleted: int = 0
    #: the batch was full: more may be waiting
    more: bool = False


def id_floor(when: float) -> bytes:
    """The smallest id of a transaction that started at ``when`` or later."""
    return int(when * 1000).to_bytes(8, "big") + bytes(8)


def purge_txn(txn: Txn, before: float, limit: int) -> PurgeResult:
    """Delete up to ``limit`` ids of transactions that started before ``before``, oldest first."""
    floor = id_floor(before)
    last = txn.scalar("SELECT id FROM txn_outcomes WHERE id < ? ORDER BY id LIMIT 1 OFFSET ?", (floor, limit - 1))
    if last is not None:
        return PurgeResult(max(txn.execute("DELETE FROM txn_outcomes WHERE id <= ?", (bytes(last),)).rowcount, 0),
                           True)
    return PurgeResult(max(txn.execute("DELETE FROM txn_outcomes WHERE id < ?", (floor,)).rowcount, 0))


class OutcomeStore:
    def __init__(self, db: Database):
        self.db = db

    def purge(self, before: float, limit: int):
        """One batch: see :func:`purge_txn`. Fires with a :class:`PurgeResult`."""
        return self.db.run("purge_outcomes", purge_txn, before, limit)

    def count(self):
        """Fires with the number of ids kept."""
        return self.db.run("count_outcomes", lambda txn: int(txn.scalar("SELECT COUNT(*) FROM txn_outcomes")))
