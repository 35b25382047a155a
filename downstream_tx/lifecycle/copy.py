"""``downstream-admin copy --to URL``: the node's whole state from its database into another, empty
one (SQLite → MySQL/MariaDB or back), read as of one moment, each table's row count and checksum
compared after the copy."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from downstream_tx.db.lock import daemon_pid
from downstream_tx.db.schema import Step
from downstream_tx.db.transfer import Snapshot, TableSum, Target, TransferError, describe_url, open_snapshot
from downstream_tx.lifecycle import QUIET, Progress


@dataclass
class Moved:
    """What a copy, backup or restore moved: per table (in order) the source's count and checksum,
    and what the target holds (None before it was read back)."""

    source: str
    target: str
    version: int
    tables: list[tuple[str, TableSum, TableSum | None]] = field(default_factory=list)
    seconds: float = 0.0
    #: a daemon was running on the source (what it wrote after the snapshot is not in the copy)
    running: str | None = None

    @property
    def rows(self) -> int:
        return sum(s.rows for _, s, _ in self.tables)


def running_daemon(snapshot: Snapshot, now: float) -> str | None:
    """Who is running on the source, as far as one can tell: a SQLite daemon holds its file's lock;
    on MySQL/MariaDB the instance holding an unexpired jobs lease."""
    engine = snapshot.engine
    if engine.name == "sqlite":
        pid = daemon_pid(engine.url.path)
        return None if pid is None else f"a daemon (pid {pid or '?'}) runs on {os.path.abspath(engine.url.path)}"
    lease = snapshot.lease
    if lease is not None and lease.holder and lease.expires > now:
        return f"instance {lease.holder} runs the node's jobs on {engine.describe()}"
    return None


def compare(moved: Moved, stored: dict[str, TableSum]) -> None:
    """Fill in what the target holds and refuse any table whose count or checksum differs."""
    wrong = []
    for i, (name, source, _) in enumerate(moved.tables):
        mine = stored.get(name, TableSum())
        moved.tables[i] = (name, source, mine)
        if mine != source:
            wrong.append(f"{name} ({source.rows} rows {source.checksum[:12]} → {mine.rows} rows {mine.checksum[:12]})")
    if wrong:
        raise TransferError("the target differs from the source: " + ", ".join(wrong))


def copy_database(source_url: str, target_url: str, progress: Progress = QUIET,
                  steps: list[Step] | None = None) -> Moved:
    """Copy every table of ``source_url`` into the empty ``target_url`` (see the module's docstring),
    whose schema is made by ``steps`` (default: this code's, for the target's engine). Raises
    :class:`TransferError` (the target left empty) when it cannot."""
    started = time.monotonic()
    if describe_url(source_url) == describe_url(target_url):
        raise TransferError("the target is the node's own database: name another one")
    target = Target(target_url)
    target.check_empty()  # before the snapshot: a refusal costs nothing
    snapshot = open_snapshot(source_url)
    moved = Moved(describe_url(source_url), target.description, snapshot.version,
                  running=running_daemon(snapshot, time.time()))
    try:
        target.prepare(snapshot.version, snapshot.tables, steps)
        for table in snapshot.tables:
            advance = progress.stage(f"copying {table.name}", snapshot.counts[table.name])
            read = TableSum()
            for page in snapshot.pages(table):
                read.add(page)
                target.insert(table, page)
                advance(len(page))
            moved.tables.append((table.name, read, None))
        target.set_sequences(snapshot.sequences)
        compare(moved, target.sums(progress.stage("verifying", moved.rows)))
        target.finish()
    except BaseException:
        target.abort()
        raise
    finally:
        snapshot.close()
    moved.seconds = time.monotonic() - started
    return moved
