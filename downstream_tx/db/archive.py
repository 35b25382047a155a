"""Contract archiving: finished contracts older than ``contract_retention`` leave the hot
``contracts`` table, their results kept per token in ``contract_totals`` (schema step 008).

Archiving *deletes* the rows after adding them into the totals: nothing reads a finished contract
once it is past the retention except the per-farmer totals (``downstream-admin farmer show/list``,
the status API, the dashboard, the metrics), which add ``contract_totals`` to what is left in
``contracts``. An archive table would keep the hot table small too but would grow without bound
and cost a second write of every row.

One batch is one transaction: the oldest finished contracts (index ``contracts_ended``) up to
``limit``, locked by primary key (MySQL; SQLite serialises writers), summed per token into
``contract_totals``, deleted. A retried or concurrent batch only sees rows still there, so no
contract is counted twice; active contracts are never selected (``state <> 'active'``, and an
active contract has no ``ended``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from downstream_tx.db.database import Database, Txn
from downstream_tx.db.farmers import SIGN_OF_LIFE

#: the per-token totals kept, in ``contract_totals`` column order after ``token_id``
SUMS = ("ended", "failed", "passes", "fails", "misses", "late_passes", "size", "downloads", "redownloads",
        "downloads_refused")
MAXES = ("v0", "v1", "last_start", "last_answered", "last_due")

#: when the farmer last showed itself on the contract (the one definition: ``db/farmers.py``)
ANSWERED_AT = SIGN_OF_LIFE


@dataclass
class ArchiveResult:
    archived: int = 0
    #: tokens whose totals changed
    tokens: int = 0
    #: the batch was full: more may be waiting
    more: bool = False


@dataclass
class Totals:
    """What archiving removed of one token's contracts (all zero/None when nothing was archived)."""

    ended: int = 0
    failed: int = 0
    passes: int = 0
    fails: int = 0
    misses: int = 0
    late_passes: int = 0
    size: int = 0
    #: v0 downloads served, served after their window, refused (db/downloads.py)
    downloads: int = 0
    redownloads: int = 0
    downloads_refused: int = 0
    v0: int = 0
    v1: int = 0
    last_start: float | None = None
    last_answered: float | None = None
    last_due: float | None = None

    @property
    def contracts(self) -> int:
        return self.ended + self.failed

    def merge(self, values: Sequence) -> None:
        """Add one row of ``SUMS + MAXES`` values."""
        d = self.__dict__
        for name, value in zip(SUMS, values):
            if value:
                d[name] += int(value)
        for name, value in zip(MAXES, values[len(SUMS):]):
            if value is not None and (d[name] is None or value > d[name]):
                d[name] = value


def latest(*values):
    """The largest of ``values`` that are not None (None if all are)."""
    present = [v for v in values if v is not None]
    return max(present) if present else None


def archive_txn(txn: Txn, before: float, limit: int) -> ArchiveResult:
    """Archive up to ``limit`` contracts that finished before ``before`` (oldest first)."""
    candidates = [r[0] for r in txn.execute(
        "SELECT id FROM contracts WHERE ended < ? AND state <> 'active' ORDER BY ended LIMIT ?", (before, limit)
    ).fetchall()]
    result = ArchiveResult(more=len(candidates) == limit)
    if not candidates:
        return result
    if txn.engine_name != "sqlite":
        # lock exactly these rows (by primary key: no gap locks on the ended index, which every
        # contract that finishes writes); a concurrent archiver that deleted some is skipped
        candidates = [r[0] for r in txn.select_in(
            "SELECT id FROM contracts WHERE id IN {ids} AND state <> 'active'" + txn.for_update(), candidates)]
    per_token: dict[int, Totals] = {}
    for row in txn.select_in(
        "SELECT c.token_id, SUM(CASE WHEN c.state = 'failed' THEN 0 ELSE 1 END), "
        "SUM(CASE WHEN c.state = 'failed' THEN 1 ELSE 0 END), SUM(c.passes), SUM(c.fails), SUM(c.misses), "
        "SUM(c.late_passes), SUM(f.size), SUM(c.downloads), SUM(c.redownloads), SUM(c.downloads_refused), "
        "MAX(CASE WHEN c.protocol = 0 THEN 1 ELSE 0 END), "
        f"MAX(CASE WHEN c.protocol = 1 THEN 1 ELSE 0 END), MAX(c.start), MAX({ANSWERED_AT}), "
        "MAX(COALESCE(c.due, c.deadline)) FROM contracts c JOIN files f ON f.id = c.file_id "
        "WHERE c.id IN {ids} GROUP BY c.token_id", candidates
    ):
        per_token.setdefault(int(row[0]), Totals()).merge(row[1:])
    add_totals_txn(txn, per_token)
    result.archived = txn.update_in("DELETE FROM contracts WHERE id IN {ids} AND state <> 'active'", candidates)
    # a v1 contract that ended otherwise than by expiry (its token deleted) may still have its tag
    txn.update_in("DELETE FROM contract_tags WHERE contract_id IN {ids}", candidates)
    result.tokens = len(per_token)
    return result


def add_totals_txn(txn: Txn, per_token: dict[int, Totals]) -> None:
    """Add ``per_token`` into ``contract_totals``: one upsert per token (one statement for all on
    MySQL, where PyMySQL sends an INSERT's rows together)."""
    if not per_token:
        return
    columns = ", ".join(("token_id",) + SUMS + MAXES)
    marks = ", ".join(["?"] * (1 + len(SUMS) + len(MAXES)))
    if txn.engine_name == "sqlite":
        new, conflict, greatest = "excluded.{}", " ON CONFLICT (token_id) DO UPDATE SET ", "max"
    else:
        new, conflict, greatest = "VALUES({})", " ON DUPLICATE KEY UPDATE ", "GREATEST"
    sets = [f"{c} = {c} + {new.format(c)}" for c in SUMS]
    # the larger of the two, or the one that is not NULL
    sets += [f"{c} = {greatest}(COALESCE({c}, {new.format(c)}), COALESCE({new.format(c)}, {c}))" for c in MAXES]
    txn.executemany(f"INSERT INTO contract_totals ({columns}) VALUES ({marks})" + conflict + ", ".join(sets),
                    [(token_id, *(getattr(t, c) for c in SUMS + MAXES)) for token_id, t in sorted(per_token.items())])


def totals_txn(txn: Txn, token_ids: Sequence[int]) -> dict[int, Totals]:
    """The archived totals of ``token_ids`` (tokens with none are left out)."""
    out = {}
    for row in txn.select_in(
        f"SELECT token_id, {', '.join(SUMS + MAXES)} FROM contract_totals WHERE token_id IN {{ids}}", list(token_ids)
    ):
        t = Totals()
        t.merge(row[1:])
        out[int(row[0])] = t
    return out


def state_totals_txn(txn: Txn) -> dict[str, int]:
    """Archived contracts by state over every token (the metrics' contract counts add them)."""
    ended, failed = txn.execute("SELECT SUM(ended), SUM(failed) FROM contract_totals").fetchone() or (0, 0)
    return {"ended": int(ended or 0), "failed": int(failed or 0)}


class ArchiveStore:
    """Archiving finished contracts and the totals it keeps."""

    def __init__(self, db: Database):
        self.db = db

    def archive(self, before: float, limit: int):
        """One batch: see :func:`archive_txn`. Fires with an :class:`ArchiveResult`."""
        return self.db.run("archive_contracts", archive_txn, before, limit)

    def totals(self, token_ids: Sequence[int]):
        """Fires with ``{token id: Totals}`` of the tokens that had contracts archived."""
        return self.db.run("archived_totals", totals_txn, list(token_ids))
