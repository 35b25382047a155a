"""Kept counters: the counts the stats job, dashboard and metrics show, kept by the writes that
change them, so reading them costs the same at 10M contracts as at 10k.

Table ``counters`` (schema step 12): ``(name, slot, n)``. A counter's value is the sum of its slots
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
  those past their deadline the timer has not visited yet; a v0 window counts from its first read,
  when its challenge is taken: ``contracts.materialise_txn``);
- ``tokens.live``: tokens not deleted.

Per token, columns of ``tokens`` kept by the same writes (not deferred: a write changes its own
token's row): ``active_contracts`` and ``active_size`` (its active contracts and their files'
bytes), from which the status list counts each farmer's online contracts (``db/status.py``).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from typing import NamedTuple

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


class Active(NamedTuple):
    """What the counters need of an active contract that ends."""

    protocol: int
    answered: int
    token_id: int
    size: int


def active_rows_txn(txn: Txn, ids: Sequence[int]) -> list[Active]:
    """The active contracts among ``ids``, locked (``FOR UPDATE``: what a write that follows in
    this transaction will change, not an older snapshot), with their files' sizes (which never
    change: read without locking the files)."""
    rows = txn.select_in("SELECT protocol, answered, token_id, file_id FROM contracts WHERE id IN {ids} "
                         "AND state = 'active'" + txn.for_update(), sorted(ids))
    sizes = files_size_txn(txn, {int(r[3]) for r in rows})
    return [Active(int(p), int(a), int(t), sizes.get(int(f), 0)) for p, a, t, f in rows]


def files_size_txn(txn: Txn, file_ids: Iterable[int]) -> dict[int, int]:
    return {int(i): int(s) for i, s in txn.select_in("SELECT id, size FROM files WHERE id IN {ids}", sorted(file_ids))}


def end_txn(txn: Txn, ended: Iterable[Active], new_state: str) -> None:
    """Count active contracts that moved to ``new_state``: the counters, and each token's active
    contracts and bytes (one UPDATE per token, in id order)."""
    out: Counter[str] = Counter()
    per_token: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    for row in ended:
        out[ACTIVE] -= 1
        out[state(new_state)] += 1
        if not row.answered:
            out[unanswered(row.protocol)] -= 1
        per_token[row.token_id][0] -= 1
        per_token[row.token_id][1] -= row.size
    txn.count(dict(out))
    add_to_tokens_txn(txn, per_token)


def start_txn(txn: Txn, protocol: int, token_id: int, size: int, n: int = 1) -> None:
    """Count ``n`` new active, unanswered contracts of ``token_id`` (``size`` bytes in all)."""
    txn.count({ACTIVE: n, unanswered(protocol): n})
    add_to_tokens_txn(txn, {token_id: (n, size)})


def add_to_tokens_txn(txn: Txn, per_token: dict[int, Sequence[int]]) -> None:
    txn.executemany("UPDATE tokens SET active_contracts = active_contracts + ?, active_size = active_size + ? "
                    "WHERE id = ?", [(n, size, token_id) for token_id, (n, size) in sorted(per_token.items()) if n])


def recount_txn(txn: Txn, batch: int = RECOUNT_BATCH) -> dict[str, int]:
    """Every counter counted from the rows (what the counters must equal): the contracts in ranges
    of ``batch`` ids, one grouped statement per range, plus the archived totals and the live
    tokens. Used once, by schema step 12, to fill the counters of an existing database."""
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


def recount_tokens_txn(txn: Txn, batch: int = RECOUNT_BATCH) -> dict[int, tuple[int, int]]:
    """Each token's active contracts and their bytes counted from the rows (tokens without any
    left out), in ranges of ``batch`` contract ids."""
    out: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    top = int(txn.scalar("SELECT MAX(id) FROM contracts") or 0)
    for low in range(0, top, batch):
        for token_id, n, size in txn.execute(
            "SELECT c.token_id, COUNT(*), SUM(f.size) FROM contracts c JOIN files f ON f.id = c.file_id "
            "WHERE c.id > ? AND c.id <= ? AND c.state = 'active' GROUP BY c.token_id", (low, low + batch)
        ).fetchall():
            out[int(token_id)][0] += int(n)
            out[int(token_id)][1] += int(size or 0)
    return {t: (n, size) for t, (n, size) in out.items()}


def tokens_txn(txn: Txn) -> dict[int, tuple[int, int]]:
    """Each token's kept ``(active_contracts, active_size)`` (tokens with none left out)."""
    return {int(t): (int(n), int(s)) for t, n, s in txn.execute(
        "SELECT id, active_contracts, active_size FROM tokens WHERE active_contracts <> 0 OR active_size <> 0"
    ).fetchall()}


def fill_txn(txn: Txn, batch: int = RECOUNT_BATCH) -> None:
    """Schema step 12: set every counter to :func:`recount_txn`'s value (in slot 0; the other
    slots of a server engine made with 0, so later writes update rows that exist), and every
    token's active contracts and bytes to :func:`recount_tokens_txn`'s."""
    slots = 1 if txn.engine_name == "sqlite" else COUNTER_SLOTS
    txn.execute("DELETE FROM counters")
    txn.executemany("INSERT INTO counters (name, slot, n) VALUES (?, ?, ?)",
                    [(name, slot, n if slot == 0 else 0) for name, n in sorted(recount_txn(txn, batch).items())
                     for slot in range(slots)])
    txn.execute("UPDATE tokens SET active_contracts = 0, active_size = 0")
    add_to_tokens_txn(txn, recount_tokens_txn(txn, batch))
