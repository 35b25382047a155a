"""Tokens (stored as SHA-256 only), addresses and the whitelist."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from downstream_tx.db import contracts
from downstream_tx.db.database import Txn

TOKEN_COLUMNS = "id, farmer_id, address, ip_hash, hbcount, created, location"


@dataclass(frozen=True)
class TokenRow:
    id: int
    farmer_id: str
    address: str
    ip_hash: str | None
    hbcount: int
    created: float
    location: str | None


def _token(row: tuple | None) -> TokenRow | None:
    return None if row is None else TokenRow(*row)


def get_by_hash_txn(txn: Txn, token_hash: bytes) -> TokenRow | None:
    return _token(txn.execute(
        f"SELECT {TOKEN_COLUMNS} FROM tokens WHERE token_hash = ? AND deleted IS NULL", (token_hash,)
    ).fetchone())


def get_by_farmer_txn(txn: Txn, farmer_id: str) -> list[TokenRow]:
    return [TokenRow(*r) for r in txn.execute(
        f"SELECT {TOKEN_COLUMNS} FROM tokens WHERE farmer_id = ? ORDER BY id", (farmer_id,)
    ).fetchall()]


def count_by_address_txn(txn: Txn, address: str) -> int:
    return int(txn.scalar("SELECT COUNT(*) FROM tokens WHERE address = ? AND deleted IS NULL", (address,)))


def count_by_ip_txn(txn: Txn, ip_hash: str) -> int:
    return int(txn.scalar("SELECT COUNT(*) FROM tokens WHERE ip_hash = ? AND deleted IS NULL", (ip_hash,)))


def insert_txn(
    txn: Txn,
    token_hash: bytes,
    farmer_id: str,
    address: str,
    ip_hash: str | None,
    now: float,
    location: str | None = None,
    message: str | None = None,
    signature: str | None = None,
) -> int:
    txn.execute(
        "INSERT INTO tokens (token_hash, farmer_id, address, ip_hash, location, message, signature, created) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (token_hash, farmer_id, address, ip_hash, location, message, signature, now),
    )
    return txn.lastrowid


def set_ip_txn(txn: Txn, token_id: int, ip_hash: str | None, location: str | None) -> None:
    txn.execute("UPDATE tokens SET ip_hash = ?, location = ? WHERE id = ?", (ip_hash, location, token_id))


def delete_txn(txn: Txn, token_id: int, now: float) -> int:
    """Mark the token deleted and end its active contracts. Returns the contracts ended."""
    ended = contracts.end_where_txn(txn, "token_id = ?", (token_id,), now, "token_deleted")
    txn.execute("UPDATE tokens SET deleted = ? WHERE id = ? AND deleted IS NULL", (now, token_id))
    return ended


# --- whitelist ---------------------------------------------------------------------------------

def balance_txn(txn: Txn, address: str) -> int | None:
    value = txn.scalar("SELECT balance FROM addresses WHERE address = ? AND active = 1", (address,))
    return None if value is None else int(value)


def import_whitelist_txn(txn: Txn, rows: Iterable[tuple[str, int]], replace: bool, now: float) -> dict[str, int]:
    """Add or update whitelist rows. With ``replace``, addresses missing from ``rows`` are
    deactivated and their tokens' contracts end (history is kept)."""
    rows = list(rows)
    existing = {a: (b, act) for a, b, act in txn.execute("SELECT address, balance, active FROM addresses").fetchall()}
    new = [(a, b, now) for a, b in rows if a not in existing]
    changed = [(b, now, a) for a, b in rows if a in existing and existing[a] != (b, 1)]
    txn.executemany("INSERT INTO addresses (address, balance, active, updated) VALUES (?, ?, 1, ?)", new)
    txn.executemany("UPDATE addresses SET balance = ?, active = 1, updated = ? WHERE address = ?", changed)
    removed = 0
    if replace:
        keep = {a for a, _ in rows}
        gone = [a for a, (_, act) in existing.items() if act and a not in keep]
        for address in gone:
            txn.execute("UPDATE addresses SET active = 0, updated = ? WHERE address = ?", (now, address))
            for (token_id,) in txn.execute(
                "SELECT id FROM tokens WHERE address = ? AND deleted IS NULL", (address,)
            ).fetchall():
                delete_txn(txn, token_id, now)
        removed = len(gone)
    return {"added": len(new), "updated": len(changed), "removed": removed}
