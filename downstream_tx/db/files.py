"""Files (chunks) the node monitors: stored (bytes in the chunk store) and seeded (v1)."""

from __future__ import annotations

from dataclasses import dataclass

from downstream_tx.db.database import Database, Txn
from downstream_tx.db.replicas import end_where_txn

FILE_COLUMNS = ("id, file_hash, original_hash, kind, size, redundancy, interval_s, replicas, "
                "encrypted, enc_key, seed, added, removed")


class DuplicateFile(Exception):
    """These bytes are already monitored (``args[0]``: the hash they are monitored as)."""


@dataclass(frozen=True)
class FileRow:
    id: int
    file_hash: str
    original_hash: str | None
    kind: str
    size: int
    redundancy: int
    interval: int
    replicas: int
    encrypted: bool
    enc_key: bytes | None
    seed: str | None
    added: float
    removed: float | None


def _file(row: tuple | None) -> FileRow | None:
    if row is None:
        return None
    values = list(row)
    values[8] = bool(values[8])
    values[9] = None if values[9] is None else bytes(values[9])
    return FileRow(*values)


def get_active_txn(txn: Txn, file_hash: str) -> FileRow | None:
    return _file(txn.execute(
        f"SELECT {FILE_COLUMNS} FROM files WHERE file_hash = ? AND removed IS NULL", (file_hash,)
    ).fetchone())


def get_by_id_txn(txn: Txn, file_id: int) -> FileRow | None:
    return _file(txn.execute(f"SELECT {FILE_COLUMNS} FROM files WHERE id = ?", (file_id,)).fetchone())


def find_duplicate_txn(txn: Txn, file_hash: str, original_hash: str) -> str | None:
    """The hash of an active stored file with the same stored or original bytes, if any."""
    row = txn.execute(
        "SELECT file_hash FROM files WHERE removed IS NULL AND (file_hash = ? OR original_hash = ?)",
        (file_hash, original_hash),
    ).fetchone()
    return None if row is None else row[0]


def insert_txn(
    txn: Txn,
    *,
    file_hash: str,
    kind: str,
    size: int,
    redundancy: int,
    interval: int,
    now: float,
    original_hash: str | None = None,
    enc_key: bytes | None = None,
    seed: str | None = None,
) -> int:
    txn.execute(
        "INSERT INTO files (file_hash, original_hash, kind, size, redundancy, interval_s, encrypted, enc_key, "
        "seed, added) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (file_hash, original_hash, kind, size, redundancy, interval, int(enc_key is not None), enc_key, seed, now),
    )
    return txn.lastrowid


def remove_txn(txn: Txn, file_id: int, now: float) -> int:
    """Stop monitoring a file: end its contracts, unused challenges stay as history."""
    ended = end_where_txn(txn, "file_id = ?", (file_id,), now, "file_removed")
    txn.execute("UPDATE files SET removed = ? WHERE id = ? AND removed IS NULL", (now, file_id))
    return ended


def stored_chunks_txn(txn: Txn, after_id: int = 0, limit: int = 1000) -> list[tuple[int, str]]:
    """``(id, file_hash)`` of the active stored files (whose bytes are in the chunk store) with ids
    above ``after_id``, a page at a time: the chunk files a backup must hold."""
    return [(int(i), str(h)) for i, h in txn.execute(
        "SELECT id, file_hash FROM files WHERE kind = 'stored' AND removed IS NULL AND id > ? ORDER BY id LIMIT ?",
        (after_id, limit)).fetchall()]


def list_active_txn(txn: Txn, kind: str | None = "stored", after_id: int = 0, limit: int = 1000) -> list[dict]:
    """Active files with replica counts and unused challenges, a page at a time (by id)."""
    where = "f.removed IS NULL AND f.id > ?"
    args: list = [after_id]
    if kind is not None:
        where += " AND f.kind = ?"
        args.append(kind)
    rows = txn.execute(
        "SELECT f.id, f.file_hash, f.kind, f.size, f.redundancy, f.interval_s, f.replicas, f.encrypted, f.added, "
        "(SELECT COUNT(*) FROM challenges c WHERE c.file_id = f.id AND c.used = 0) "
        f"FROM files f WHERE {where} ORDER BY f.id LIMIT ?",
        (*args, limit),
    ).fetchall()
    keys = ("id", "file_hash", "kind", "size", "redundancy", "interval", "replicas", "encrypted", "added",
            "unused_challenges")
    return [dict(zip(keys, r)) | {"encrypted": bool(r[7])} for r in rows]


class FileStore:
    def __init__(self, db: Database):
        self.db = db

    def get_active(self, file_hash: str):
        """Fires with the monitored file of this hash, or None."""
        return self.db.run("get_file", get_active_txn, file_hash)

    def get(self, file_id: int):
        """Fires with the file of this id (monitored or not), or None."""
        return self.db.run("get_file", get_by_id_txn, file_id)

    def add_stored(self, file_hash: str, original_hash: str, size: int, enc_key: bytes | None, redundancy: int,
                   interval: int, now: float):
        """Record a stored file; fails with :class:`DuplicateFile` when its stored or original bytes
        are already monitored. Fires with the new file id."""

        def body(txn: Txn) -> int:
            duplicate = find_duplicate_txn(txn, file_hash, original_hash)
            if duplicate is not None:
                raise DuplicateFile(duplicate)
            return insert_txn(txn, file_hash=file_hash, kind="stored", size=size, redundancy=redundancy,
                              interval=interval, now=now, original_hash=original_hash, enc_key=enc_key)

        return self.db.run("add_file", body)

    def remove(self, file_id: int, now: float):
        """Stop monitoring a file; fires with the contracts ended."""
        return self.db.run("remove_file", remove_txn, file_id, now)

    def list_active(self, kind: str | None = "stored", after_id: int = 0, limit: int = 1000):
        """Fires with one page of monitored files (see :func:`list_active_txn`)."""
        return self.db.run("list_files", list_active_txn, kind, after_id, limit)

    def replicas(self, file_hash: str):
        """Fires with the replica count of the active file with this hash, or None."""
        return self.db.run("file_replicas", lambda txn: txn.scalar(
            "SELECT replicas FROM files WHERE file_hash = ? AND removed IS NULL", (file_hash,)))

    def count(self):
        """Fires with the number of file rows, removed ones included."""
        return self.db.run("count_files", lambda txn: int(txn.scalar("SELECT COUNT(*) FROM files")))
