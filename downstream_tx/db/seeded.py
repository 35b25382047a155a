"""Protocol v1: the pool of pre-encoded seeded chunks and the v1 (Merkle heartbeat) contracts.

A v1 contract keeps its current challenge's due time in ``due`` and its *expiration* in
``deadline`` (``due + interval`` once answered, ``due`` while unanswered), so that "is it expired"
is ``now >= deadline`` and the expiry timer is an index range scan on ``(state, protocol,
deadline)`` like the v0 timer. ``hb_state``, ``hb_challenge`` and ``tag`` hold JSON text.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from downstream_tx.db import files, meta
from downstream_tx.db.database import Txn

V1 = 1
#: ids looked up per query (the original looked contracts up 100 at a time)
LOOKUP_BATCH = 100
#: the largest id a contract can have (SQLite and MySQL signed 64-bit)
MAX_ID = (1 << 63) - 1


@dataclass(frozen=True)
class EncodedChunk:
    """A seeded chunk encoded off the reactor thread, ready to enter the pool."""

    seed: str
    size: int
    file_hash: str
    hb_state: str
    tag: str


@dataclass(frozen=True)
class PoolChunk:
    id: int
    file_id: int
    size: int
    seed: str
    hb_state: str
    tag: str


class V1Contract(NamedTuple):
    """A named tuple: built once per id of every /challenge and /answer (a frozen dataclass's
    ``__init__`` was 5% of the v1 daemon's CPU)."""

    id: int
    state: str
    due: float | None
    deadline: float
    answered: bool
    interval: int
    hb_state: str | None
    hb_challenge: str | None


# --- the pool -------------------------------------------------------------------------------------

def pool_counts_txn(txn: Txn) -> dict[int, int]:
    """Chunks ready, by size."""
    return {int(size): int(n) for size, n in txn.execute(
        "SELECT size, COUNT(*) FROM seeded_pool GROUP BY size"
    ).fetchall()}


def pool_add_txn(txn: Txn, chunks: Sequence[EncodedChunk], interval: int, now: float) -> int:
    """Record encoded chunks (a ``seeded`` file row each) and put them in the pool. A chunk whose
    file hash is already recorded is skipped, so a retried transaction adds nothing twice."""
    rows = []
    for chunk in chunks:
        if txn.scalar("SELECT COUNT(*) FROM files WHERE file_hash = ? AND removed IS NULL", (chunk.file_hash,)):
            continue
        file_id = files.insert_txn(txn, file_hash=chunk.file_hash, kind="seeded", size=chunk.size, redundancy=1,
                                   interval=interval, now=now, seed=chunk.seed)
        rows.append((file_id, chunk.size, chunk.hb_state, chunk.tag, now))
    txn.executemany("INSERT INTO seeded_pool (file_id, size, hb_state, tag, created) VALUES (?, ?, ?, ?, ?)", rows)
    return len(rows)


def pool_take_txn(txn: Txn, max_size: int, attempts: int = 5) -> PoolChunk | None:
    """Remove and return the largest pooled chunk of at most ``max_size`` bytes (each chunk is
    handed out once), or None."""
    for _ in range(attempts):
        # two index seeks on seeded_pool (size, id): the largest size that fits, then its oldest
        # chunk. (One "ORDER BY size DESC, id" query sorted the whole pool on every take: 30 ms
        # each with 2,000 chunks pooled, see docs/performance.md.)
        size = txn.scalar("SELECT MAX(size) FROM seeded_pool WHERE size <= ?", (max_size,))
        if size is None:
            return None
        row = txn.execute(
            "SELECT p.id, p.file_id, p.size, f.seed, p.hb_state, p.tag FROM seeded_pool p "
            "JOIN files f ON f.id = p.file_id WHERE p.size = ? ORDER BY p.id LIMIT 1" + txn.for_update(),
            (size,),
        ).fetchone()
        if row is None:
            return None
        if txn.execute("DELETE FROM seeded_pool WHERE id = ?", (row[0],)).rowcount:
            return PoolChunk(int(row[0]), int(row[1]), int(row[2]), row[3], row[4], row[5])
    return None


def discard_file_txn(txn: Txn, file_id: int, now: float) -> None:
    """Retire a seeded file that can no longer be used (its state does not verify)."""
    txn.execute("UPDATE files SET removed = ? WHERE id = ? AND removed IS NULL", (now, file_id))


# --- contracts ------------------------------------------------------------------------------------

def active_size_by_address_txn(txn: Txn, address: str, now: float) -> int:
    """Bytes under active, unexpired v1 contracts of every token of ``address``."""
    value = txn.scalar(
        "SELECT SUM(f.size) FROM tokens t JOIN contracts c ON c.token_id = t.id AND c.state = 'active' "
        "JOIN files f ON f.id = c.file_id WHERE t.address = ? AND c.protocol = 1 AND c.deadline > ?",
        (address, now),
    )
    return int(value or 0)


def insert_contract_txn(txn: Txn, token_id: int, file_id: int, now: float, interval: int, seq: int, due: float,
                        hb_state: str, hb_challenge: str, tag: str) -> int:
    """A new v1 contract with its first challenge outstanding (expiration = due)."""
    txn.execute(
        "INSERT INTO contracts (token_id, file_id, protocol, state, start, interval_s, seq, issued, deadline, due, "
        "answered, hb_state, hb_challenge, tag) VALUES (?, ?, 1, 'active', ?, ?, ?, ?, ?, ?, 0, ?, ?, ?)",
        (token_id, file_id, now, interval, seq, now, due, due, hb_state, hb_challenge, tag),
    )
    contract_id = txn.lastrowid
    txn.execute("UPDATE files SET replicas = 1 WHERE id = ?", (file_id,))
    return contract_id


def get_contracts_txn(txn: Txn, token_id: int, ids: Iterable[int], lock: bool = True) -> dict[int, V1Contract]:
    """The token's v1 contracts (any state) among ``ids``, looked up ``LOOKUP_BATCH`` at a time."""
    wanted = sorted({i for i in ids if 0 < i <= MAX_ID})
    found: dict[int, V1Contract] = {}
    for start in range(0, len(wanted), LOOKUP_BATCH):
        part = wanted[start:start + LOOKUP_BATCH]
        marks = ", ".join("?" * len(part))
        for row in txn.execute(
            "SELECT id, state, due, deadline, answered, interval_s, hb_state, hb_challenge FROM contracts "
            f"WHERE token_id = ? AND protocol = 1 AND id IN ({marks})" + (txn.for_update() if lock else ""),
            (token_id, *part),
        ).fetchall():
            cid = int(row[0])
            found[cid] = V1Contract(cid, row[1], row[2], float(row[3]), bool(row[4]), int(row[5]), row[6], row[7])
    return found


def active_ids_txn(txn: Txn, token_id: int) -> list[int]:
    return [int(r[0]) for r in txn.execute(
        "SELECT id FROM contracts WHERE token_id = ? AND state = 'active' AND protocol = 1 ORDER BY id", (token_id,)
    ).fetchall()]


def set_challenges_txn(txn: Txn, updates: Sequence[tuple[str, str, int, float, float, int, float]]) -> None:
    """Store newly issued challenges: rows of (hb_state, hb_challenge, seq, new_due, issued, id,
    old_due); the expiration becomes the new due time. Guarded on the old due time, so a retried
    transaction changes nothing twice. One statement per chunk on MariaDB (PyMySQL's executemany
    sends an UPDATE per row: a round trip per refreshed contract)."""
    txn.update_by_id(
        "contracts", ["hb_state", "hb_challenge", "seq", "due", "deadline", "issued", "answered"],
        [(cid, st, ch, seq, due, due, issued, 0, old) for st, ch, seq, due, issued, cid, old in updates],
        where="state = 'active'", match=["due"],
    )


def record_answers_txn(txn: Txn, token_id: int, passes: Sequence[int], fails: Sequence[int]) -> int:
    """A valid proof: answered, expiration moves to due + interval, the token's heartbeat count
    goes up once. An invalid one only counts a fail. Returns the passes recorded."""
    # one statement per LOOKUP_BATCH ids, not one per id: PyMySQL's executemany sends an UPDATE per
    # row, a round trip each (500 per /answer batch on MariaDB, see docs/performance.md)
    counted = 0
    for start in range(0, len(passes), LOOKUP_BATCH):
        part = passes[start:start + LOOKUP_BATCH]
        counted += max(txn.execute(
            "UPDATE contracts SET answered = 1, deadline = due + interval_s, passes = passes + 1, run = 0 "
            f"WHERE id IN {txn.in_list(part)} AND answered = 0 AND state = 'active'", part).rowcount, 0)
    if counted:
        txn.execute("UPDATE tokens SET hbcount = hbcount + ? WHERE id = ?", (counted, token_id))
    for start in range(0, len(fails), LOOKUP_BATCH):
        part = fails[start:start + LOOKUP_BATCH]
        txn.execute(f"UPDATE contracts SET fails = fails + 1 WHERE id IN {txn.in_list(part)} AND answered = 0", part)
    return counted


def tags_txn(txn: Txn, token_id: int, now: float) -> list[tuple[int, str]]:
    """(contract id, tag JSON) of the token's active, unexpired v1 contracts."""
    return [(int(r[0]), r[1]) for r in txn.execute(
        "SELECT id, tag FROM contracts WHERE token_id = ? AND state = 'active' AND protocol = 1 AND deadline > ? "
        "AND tag IS NOT NULL ORDER BY id",
        (token_id, now),
    ).fetchall()]


#: node_meta marker: the end of the last downtime window already added to v1 contracts' clocks
SHIFTED_UNTIL = "v1_shifted_until"


def shift_for_downtime_txn(txn: Txn, start: float, end: float) -> int:
    """Downtime rule for v1: add the node's downtime ``(start, end]`` to the due time and expiration
    of every active v1 contract that had not expired when it began, so each gets back, after the
    node's return, the time it had left when the node went away. Exactly once per window: the
    window's end is stored in ``node_meta`` in the same transaction, and only the part of the window
    after a stored end is added (a retried or repeated call adds nothing twice). Returns the
    contracts moved."""
    marker = meta.get_txn(txn, SHIFTED_UNTIL)
    done = float(marker.decode("ascii")) if marker else 0.0
    begin = max(start, done)
    if end <= begin:
        return 0
    shift = end - begin
    moved = txn.execute(
        "UPDATE contracts SET due = due + ?, deadline = deadline + ? WHERE state = 'active' AND protocol = 1 "
        "AND deadline > ?",
        (shift, shift, start),
    ).rowcount
    meta.set_txn(txn, SHIFTED_UNTIL, repr(float(end)).encode("ascii"))
    return max(moved, 0)


@dataclass
class ExpireResult:
    ended: int = 0
    failed: int = 0
    more: bool = False


def expire_txn(txn: Txn, now: float, limit: int = 5000) -> ExpireResult:
    """End one page of v1 contracts whose expiration has passed: *ended* when the last challenge
    was answered (the farmer stopped asking, or the challenges ran out), *failed* (a miss) when
    it was not. Their tags are dropped and their single-use seeded files retired. (Expirations that
    fell while the node was down were moved on first: :func:`shift_for_downtime_txn`.)"""
    rows = txn.execute(
        "SELECT id, file_id, answered, deadline FROM contracts WHERE state = 'active' AND protocol = 1 "
        "AND deadline <= ? ORDER BY deadline LIMIT ?" + txn.for_update(),
        (now, limit),
    ).fetchall()
    result = ExpireResult(more=len(rows) == limit)
    ended = [int(cid) for cid, _, answered, _ in rows if answered]
    failed = [int(cid) for cid, _, answered, _ in rows if not answered]
    result.ended, result.failed = len(ended), len(failed)
    # set-based, LOOKUP_BATCH ids per statement (PyMySQL's executemany is a round trip per row);
    # ``ended = deadline``: each contract ends at its own expiration
    for ids, state, reason, miss in ((ended, "ended", "expired", 0), (failed, "failed", "missed", 1)):
        for start in range(0, len(ids), LOOKUP_BATCH):
            part = ids[start:start + LOOKUP_BATCH]
            txn.execute(f"UPDATE contracts SET state = ?, ended = deadline, end_reason = ?, misses = misses + ?, "
                        f"tag = NULL WHERE id IN {txn.in_list(part)} AND state = 'active'",
                        [state, reason, miss, *part])
    file_ids = [int(file_id) for _, file_id, _, _ in rows]
    for start in range(0, len(file_ids), LOOKUP_BATCH):
        part = file_ids[start:start + LOOKUP_BATCH]
        txn.execute(f"UPDATE files SET replicas = 0, removed = ? WHERE id IN {txn.in_list(part)} AND removed IS NULL",
                    [now, *part])
    return result
