"""Hash-challenge batches (v0), the per-file pool of unused challenges, and the pruning of used
challenges no contract points at any more.

A challenge is taken (``used`` = 1) by the contract it is issued to, in the transaction that points
the contract's ``challenge_id`` at it (a new contract, a window's first read, the timer's issue, a
starved contract's fill: always a contract of the challenge's own file). It stays needed while a
contract row points at it: as ``challenge_id`` (the window's challenge: the farmer's ``/due``, its
answer, containment's retries, which keep it) or as ``prev_challenge_id`` (an answer to the previous
window across the window turn: ``db/late.py``). Once no contract points at it (the window turned
past it, its answer was judged, its contract was archived) nothing can point at it again: only an
unused challenge is ever taken, and ``prev_challenge_id`` is only ever set from ``challenge_id``. So
:func:`prune_txn` deletes used challenges that no contract row of their file points at, and
nothing else reads them: the contract listings show the id only, the counts read the unused ones
(``files``, ``challenges counts``), a batch keeps its row (``challenge_batches``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from downstream_tx.db.database import IN_BATCH, Database, Txn


class ConcurrentChallengeUse(RuntimeError):
    pass


def insert_batch_txn(
    txn: Txn,
    file_id: int,
    root_seed: bytes,
    merkle_root: bytes,
    seeds: Sequence[bytes],
    answers: Sequence[str],
    now: float,
) -> int:
    """Store a batch and its challenges. Idempotent: a batch with the same root seed is stored once."""
    existing = txn.scalar(
        "SELECT id FROM challenge_batches WHERE file_id = ? AND root_seed = ?", (file_id, root_seed)
    )
    if existing is not None:
        return int(existing)
    txn.execute(
        "INSERT INTO challenge_batches (file_id, root_seed, merkle_root, count, created) VALUES (?, ?, ?, ?, ?)",
        (file_id, root_seed, merkle_root, len(seeds), now),
    )
    batch_id = txn.lastrowid
    txn.executemany(
        "INSERT INTO challenges (batch_id, file_id, seq, seed, answer) VALUES (?, ?, ?, ?, ?)",
        [(batch_id, file_id, i, seed, answer) for i, (seed, answer) in enumerate(zip(seeds, answers))],
    )
    return batch_id


def unused_count_txn(txn: Txn, file_id: int) -> int:
    return int(txn.scalar("SELECT COUNT(*) FROM challenges WHERE file_id = ? AND used = 0", (file_id,)))


#: "fewer than ``?`` unused challenges" of file ``f`` (the ``?`` is the mark less one): the unused
#: challenge at that offset of index ``challenges_unused`` does not exist. It reads at most the mark's
#: number of index entries per file, not all of its unused challenges (COUNT(*)): a file holds up to
#: a batch more than the mark, or an operator's batch of up to 100,000 (the pass asks about every
#: file it took from: ~0.1 ms per file of 1,000 unused challenges on MariaDB, counted)
_LOW = ("(SELECT c.id FROM challenges c WHERE c.file_id = f.id AND c.used = 0 ORDER BY c.id "
        "LIMIT 1 OFFSET ?) IS NULL")


def low_files_txn(txn: Txn, file_ids: Sequence[int], low_water: int) -> list[int]:
    """Of ``file_ids`` (active stored files), those with fewer than ``low_water`` unused challenges,
    in id order: one statement per ``IN_BATCH`` files (the timer pass asks after every page)."""
    if low_water <= 0:
        return []
    rows = txn.select_in(
        f"SELECT f.id FROM files f WHERE f.id IN {{ids}} AND f.removed IS NULL AND f.kind = 'stored' AND {_LOW}",
        sorted(set(file_ids)), after=[low_water - 1])
    return sorted(r[0] for r in rows)


def all_low_files_txn(txn: Txn, low_water: int) -> list[int]:
    """Every active stored file under the low-water mark (run once at start-up)."""
    if low_water <= 0:
        return []
    rows = txn.execute(f"SELECT f.id FROM files f WHERE f.removed IS NULL AND f.kind = 'stored' AND {_LOW}",
                       (low_water - 1,)).fetchall()
    return [r[0] for r in rows]


def take_txn(txn: Txn, file_id: int, count: int) -> list[tuple[int, bytes]]:
    """Reserve up to ``count`` unused challenges of a file, oldest first: [(id, seed)]."""
    return take_many_txn(txn, {file_id: count}).get(file_id, [])


def take_many_txn(txn: Txn, wants: dict[int, int],
                  files_per_statement: int = 100) -> dict[int, list[tuple[int, bytes]]]:
    """Reserve, for each file, up to ``wants[file]`` unused challenges, oldest first: [(id, seed)].

    One SELECT per ``files_per_statement`` files and one UPDATE per ``TAKE_BATCH`` challenges,
    whatever the number of rows.
    """
    return _take(txn, wants, files_per_statement, with_seed=True)


def take_ids_txn(txn: Txn, wants: dict[int, int], files_per_statement: int = 100) -> dict[int, list[int]]:
    """:func:`take_many_txn` for callers that need only the ids (the timer pass: the farmer reads
    the seed later): the seeds are not read."""
    return _take(txn, wants, files_per_statement, with_seed=False)


#: challenges marked used per statement (an IN list of constants: the server sorts it once)
TAKE_BATCH = 5000


def _take(txn: Txn, wants: dict[int, int], files_per_statement: int, with_seed: bool) -> dict:
    taken: dict[int, list] = {}
    items = [(f, n) for f, n in sorted(wants.items()) if n > 0]
    columns = "id, file_id, seed" if with_seed else "id, file_id"
    rows: list[tuple] = []
    if txn.engine_name != "sqlite" and sum(n == 1 for _, n in items) > 1:
        # files that want one challenge each (a pass whose misses are of many files): their oldest
        # unused ones in one loose index scan, not a query block per file
        rows += _first_unused_txn(txn, [f for f, n in items if n == 1], columns)
        items = [(f, n) for f, n in items if n != 1]
    one = f"SELECT {columns} FROM challenges WHERE file_id = ? AND used = 0 ORDER BY id LIMIT ?"
    # a server: each file's locked read a parenthesised query block of the UNION (MariaDB 10.4+,
    # MySQL 8.0.22+); not a derived table, which the server materialises (an internal table) per
    # file (~30% more server CPU for the pass's take: docs/performance.md). SQLite has no
    # parenthesised blocks (nor locks): a derived table per file
    branch = f"({one}{txn.for_update()})" if txn.engine_name != "sqlite" else f"SELECT {columns} FROM ({one}) p"
    for start in range(0, len(items), files_per_statement):
        part = items[start:start + files_per_statement]
        select = " UNION ALL ".join([branch] * len(part))
        rows += txn.execute(select, [v for item in part for v in item]).fetchall()
    ids = [r[0] for r in rows]
    changed = 0
    for first in range(0, len(ids), TAKE_BATCH):
        batch = ids[first:first + TAKE_BATCH]
        changed += txn.execute(f"UPDATE challenges SET used = 1 WHERE id IN {txn.in_list(batch)} AND used = 0",
                               batch).rowcount
    if changed != len(ids):
        # the rows were locked (MySQL) or writes are serialised (SQLite): this means a concurrent
        # writer ignored the lock; let the transaction retry rather than hand out a used challenge
        raise ConcurrentChallengeUse(f"{len(ids) - changed} challenges taken concurrently")
    rows.sort()
    if with_seed:
        for challenge_id, file_id, seed in rows:
            taken.setdefault(file_id, []).append((challenge_id, bytes(seed)))
    else:
        for challenge_id, file_id in rows:
            taken.setdefault(file_id, []).append(challenge_id)
    return taken


def _first_unused_txn(txn: Txn, file_ids: Sequence[int], columns: str) -> list[tuple]:
    """The oldest unused challenge of each of ``file_ids`` (a server), locked: ``columns`` of each.
    The candidates come from one plain read (``MIN(id) … GROUP BY file_id``, a loose scan of index
    ``challenges_unused``: one dive per file), then they are locked by primary key and checked
    again; a file whose candidate another transaction took in between (used once its lock was
    released) is looked at again, until it has none left."""
    rows: list[tuple] = []
    left = sorted(file_ids)
    while left:
        firsts = txn.select_in("SELECT file_id, MIN(id) FROM challenges WHERE file_id IN {ids} AND used = 0 "
                               "GROUP BY file_id", left)
        if not firsts:
            break
        got = txn.select_in(f"SELECT {columns} FROM challenges WHERE id IN {{ids}} AND used = 0{txn.for_update()}",
                            sorted(int(ch) for _, ch in firsts))
        rows += got
        have = {int(r[1]) for r in got}
        left = sorted(int(f) for f, _ in firsts if int(f) not in have)
    return rows


def batches_txn(txn: Txn, file_id: int) -> list[dict]:
    rows = txn.execute(
        "SELECT id, root_seed, merkle_root, count, created FROM challenge_batches WHERE file_id = ? ORDER BY id",
        (file_id,),
    ).fetchall()
    return [
        {"id": r[0], "root_seed": bytes(r[1]).hex(), "merkle_root": bytes(r[2]).hex(), "count": r[3], "created": r[4]}
        for r in rows
    ]


#: files a prune transaction looks at (one IN list)
PRUNE_FILES = IN_BATCH


@dataclass
class PruneResult:
    """One prune transaction: the used challenges it deleted, and where the walk goes on — ``(file
    id, challenge id)``: the next transaction starts at that file, after that challenge of it — or
    None when it looked at the last file."""

    deleted: int
    next: tuple[int, int] | None
    #: files looked at and used challenges read (deleted or kept)
    files: int = 0
    read: int = 0


def prune_txn(txn: Txn, start: tuple[int, int], limit: int, files: int = PRUNE_FILES) -> PruneResult:
    """Delete the used challenges no contract points at (``challenge_id``, ``prev_challenge_id``) of
    the next ``files`` files from ``start`` (file id, challenge id: that file's used challenges after
    that id, then the next files'), reading at most ``limit`` used challenges, so deleting at most
    as many. Every statement is a range of an index: the files' primary key, ``challenges_unused``
    (file, used, id) and ``contracts_file`` (file, state) for the contracts of the files that had
    used challenges; the contracts table is never scanned."""
    first_file, after_id = start
    file_ids = [int(r[0]) for r in txn.execute(
        "SELECT id FROM files WHERE id >= ? ORDER BY id LIMIT ?", (first_file, files)).fetchall()]
    if not file_ids:
        return PruneResult(0, None)
    rows = [(int(cid), int(fid)) for cid, fid in txn.execute(
        f"SELECT id, file_id FROM challenges WHERE file_id IN {txn.in_list(file_ids)} AND used = 1 "
        "AND (file_id > ? OR id > ?) ORDER BY file_id, id LIMIT ?",
        [*file_ids, first_file, after_id, limit]).fetchall()]
    if len(rows) == limit:  # (the last file may have more)
        following: tuple[int, int] | None = (rows[-1][1], rows[-1][0])
    elif len(file_ids) == files:
        following = (file_ids[-1] + 1, 0)
    else:
        following = None
    result = PruneResult(0, following, files=len(file_ids), read=len(rows))
    if not rows:
        return result
    pointed: set[int] = set()
    holding = sorted({f for _, f in rows})
    for current, previous in txn.select_in(
            "SELECT challenge_id, prev_challenge_id FROM contracts WHERE file_id IN {ids}", holding):
        pointed.update((current, previous))
    dead = [cid for cid, _ in rows if cid not in pointed]
    if dead:
        # (used = 1: a used challenge is never made unused again; the guard only makes that explicit)
        result.deleted = txn.update_in("DELETE FROM challenges WHERE id IN {ids} AND used = 1", dead)
    return result


class ChallengeStore:
    """The v0 hash challenges of stored files."""

    def __init__(self, db: Database):
        self.db = db

    def add_batch(self, file_id: int, root_seed: bytes, merkle_root: bytes, seeds: Sequence[bytes],
                  answers: Sequence[str], now: float):
        """Fires with the batch id: see :func:`insert_batch_txn`."""
        return self.db.run("store_batch", insert_batch_txn, file_id, root_seed, merkle_root, seeds, answers, now)

    def low_files(self, file_ids: Sequence[int] | None, low_water: int):
        """Fires with the active stored files (of ``file_ids``, or all) under ``low_water`` unused
        challenges."""
        if file_ids is None:
            return self.db.run("low_files", all_low_files_txn, low_water)
        return self.db.run("low_files", low_files_txn, list(file_ids), low_water)

    def prune(self, start: tuple[int, int], limit: int, files: int = PRUNE_FILES):
        """One prune transaction: see :func:`prune_txn`. Fires with a :class:`PruneResult`."""
        return self.db.run("prune_challenges", prune_txn, start, limit, files)

    def batches(self, file_id: int):
        return self.db.run("batches", batches_txn, file_id)

    def unused(self, file_id: int):
        """Fires with the file's unused challenges."""
        return self.db.run("unused_challenges", unused_count_txn, file_id)

    def stored(self, batch_id: int | None = None):
        """Fires with ``(seed, answer)`` of every stored challenge, or of one batch, in order."""
        where, args = ("", ()) if batch_id is None else (" WHERE batch_id = ?", (batch_id,))
        return self.db.run("stored_challenges", lambda txn: [(bytes(s), a) for s, a in txn.execute(
            f"SELECT seed, answer FROM challenges{where} ORDER BY batch_id, seq", args).fetchall()])

    def counts(self):
        """Fires with ``{"batches": n, "unused": m}`` over every file."""
        return self.db.run("challenge_counts", lambda txn: {
            "batches": int(txn.scalar("SELECT COUNT(*) FROM challenge_batches")),
            "unused": int(txn.scalar("SELECT COUNT(*) FROM challenges WHERE used = 0"))})
