"""Reading and forging rows the node's stores do not offer, for tests only: a v1 contract's stored
heartbeat state (to corrupt it, or write it as rows before schema step 5 held it), its deadline,
and an exhausted challenge supply. Each is one transaction through the database's own ``run``."""

from __future__ import annotations

from typing import Any

from downstream_tx.db.database import Database, Txn
from downstream_tx.db.seeded import Sealed


def overwrite_state(db: Database, contract_id: int, seq: int, sealed: Sealed | None, hb_state: str | None = None,
                    hb_challenge: str | None = None) -> Any:
    """Replace a v1 contract's stored heartbeat state (a corrupt or foreign state, or with ``sealed``
    None and JSON, a row as written before schema step 5). Fires with the rows changed."""
    values = tuple(sealed) if sealed is not None else (None,) * 5
    return db.run("v1_overwrite_state", lambda txn: txn.execute(
        "UPDATE contracts SET seq = ?, hb_seed = ?, hb_n = ?, hb_root = ?, hb_hmac = ?, hb_time = ?, hb_state = ?, "
        "hb_challenge = ? WHERE id = ? AND protocol = 1",
        (seq, *values, hb_state, hb_challenge, contract_id)).rowcount)


def stored_state(db: Database, contract_id: int) -> Any:
    """Fires with a v1 contract's ``(seq, Sealed or None, hb_state, hb_challenge)`` as stored, or None."""

    def body(txn: Txn):
        r = txn.execute("SELECT seq, hb_seed, hb_n, hb_root, hb_hmac, hb_time, hb_state, hb_challenge "
                        "FROM contracts WHERE id = ?", (contract_id,)).fetchone()
        if r is None:
            return None
        sealed = None if r[1] is None else Sealed(bytes(r[1]), r[2], bytes(r[3]), bytes(r[4]), r[5])
        return r[0], sealed, r[6], r[7]

    return db.run("v1_stored_state", body)


def v1_deadline(db: Database, contract_id: int) -> Any:
    """Fires with a contract's deadline, or None."""
    return db.run("v1_deadline", lambda txn: txn.scalar("SELECT deadline FROM contracts WHERE id = ?", (contract_id,)))


def mark_all_used(db: Database) -> Any:
    """Mark every challenge used (an exhausted supply). Fires with the rows changed."""
    return db.run("mark_all_used", lambda txn: txn.execute("UPDATE challenges SET used = 1").rowcount)
