"""The node_meta table: the node secret and small persistent markers."""

from __future__ import annotations

from twisted.logger import Logger

from downstream_tx.db.database import Database, Txn

log = Logger()

#: the node secret (32 random bytes, made on first start)
SECRET = "secret"
#: when the contract timer last completed a pass (``repr(float)``)
LAST_ALIVE = "last_alive"


def get_txn(txn: Txn, name: str) -> bytes | None:
    value = txn.scalar("SELECT value FROM node_meta WHERE name = ?", (name,))
    return None if value is None else bytes(value)


def locked_get_txn(txn: Txn, name: str) -> bytes | None:
    """:func:`get_txn` with the row locked until the transaction ends (a marker read, then moved)."""
    value = txn.scalar("SELECT value FROM node_meta WHERE name = ?" + txn.for_update(), (name,))
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


class MetaStore:
    def __init__(self, db: Database):
        self.db = db

    def secret(self, new_value: bytes):
        """Fires with the node secret, storing ``new_value`` first on a database that has none."""
        return self.db.run("node_secret", get_or_create_txn, SECRET, new_value)

    async def last_alive(self) -> float | None:
        """When the contract timer last completed a pass (any earlier run of the node)."""
        value = await self.db.run("last_alive", get_txn, LAST_ALIVE)
        if value is None:
            return None
        try:
            return float(value.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            log.warn("ignoring an unreadable {name} marker", name=LAST_ALIVE)
            return None

    def mark_alive(self, when: float):
        return self.db.run("mark_alive", set_txn, LAST_ALIVE, repr(float(when)).encode("ascii"))

    def snapshot(self):
        """Fires with every row of every table, ``{table: sorted row reprs}`` (small databases: tests
        compare the state before and after a refused call)."""

        def body(txn: Txn) -> dict[str, list[str]]:
            if txn.engine_name == "sqlite":
                names = [r[0] for r in txn.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                                   "AND name NOT LIKE 'sqlite_%'").fetchall()]
            else:
                names = [r[0] for r in txn.execute("SHOW TABLES").fetchall()]
            return {n: sorted(map(repr, txn.execute(f"SELECT * FROM {n}").fetchall())) for n in sorted(names)}

        return self.db.run("snapshot", body)
