"""The node_meta table: the node secret and small persistent markers."""

from __future__ import annotations

from downstream_tx.db.database import Txn


def get_txn(txn: Txn, name: str) -> bytes | None:
    value = txn.scalar("SELECT value FROM node_meta WHERE name = ?", (name,))
    return None if value is None else bytes(value)


def set_txn(txn: Txn, name: str, value: bytes) -> None:
    if txn.execute("UPDATE node_meta SET value = ? WHERE name = ?", (value, name)).rowcount == 0:
        if get_txn(txn, name) is None:
            txn.execute("INSERT INTO node_meta (name, value) VALUES (?, ?)", (name, value))


def get_or_create_txn(txn: Txn, name: str, new_value: bytes) -> bytes:
    """Return the stored value, storing ``new_value`` first if there is none (first start)."""
    existing = get_txn(txn, name)
    if existing is not None:
        return existing
    txn.execute("INSERT INTO node_meta (name, value) VALUES (?, ?)", (name, new_value))
    return new_value
