"""Ending contracts: a contract that ends (removed, token deleted, file removed, failed) frees its
file's replica slot, so the file goes to the next farmer asking for a chunk."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from downstream_tx.db import counters
from downstream_tx.db.database import Txn

ACTIVE, ENDED, FAILED = "active", "ended", "failed"


def end_where_txn(txn: Txn, where: str, args: Sequence[Any], now: float, reason: str,
                  state: str = ENDED) -> int:
    """End the active contracts matching ``where`` and free their files' replica slots."""
    rows = txn.execute(
        f"SELECT id, file_id FROM contracts WHERE state = 'active' AND {where}" + txn.for_update(), tuple(args)
    ).fetchall()
    finish_txn(txn, rows, now, reason, state)
    return len(rows)


def finish_txn(txn: Txn, rows: Sequence[tuple[int, int]], now: float, reason: str, state: str) -> None:
    """End the active contracts ``rows`` of ``(id, file_id)`` and free one slot of their file each
    (the kept counters follow: each contract's class is read under its lock first)."""
    ids = [contract_id for contract_id, _ in rows]
    counters.end_txn(txn, counters.active_rows_txn(txn, ids), state)
    txn.update_in("UPDATE contracts SET state = ?, ended = ?, end_reason = ? WHERE id IN {ids} AND state = 'active'",
                  [contract_id for contract_id, _ in rows], before=[state, now, reason])
    per_file: dict[int, int] = defaultdict(int)
    for _, file_id in rows:
        per_file[file_id] += 1
    txn.executemany(
        "UPDATE files SET replicas = CASE WHEN replicas >= ? THEN replicas - ? ELSE 0 END WHERE id = ?",
        [(n, n, file_id) for file_id, n in per_file.items()],
    )


def retire_v1_txn(txn: Txn, contract_ids: Sequence[int], file_ids: Sequence[int], now: float) -> None:
    """What ending v1 contracts leaves behind (at expiry, or when their farmer is disqualified):
    their tags go, and their single-use seeded files are retired."""
    txn.update_in("DELETE FROM contract_tags WHERE contract_id IN {ids}", list(contract_ids))
    txn.update_in("UPDATE files SET replicas = 0, removed = ? WHERE id IN {ids} AND removed IS NULL",
                  list(file_ids), before=[now])
