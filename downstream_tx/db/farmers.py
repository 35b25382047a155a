"""Farmers as the operator sees them (``downstream-admin farmer list/show``, the dashboard's farmer
list and farmer page): one row per token with its contracts' activity — protocols, contracts,
passes, fails, misses, when it was last seen, whether it is online — paged by token id so memory
stays flat however many there are.

This is the one place that says what a farmer's activity is: every view of it goes through
:func:`list_txn` or :func:`by_farmer_ids_txn`, which share ``_SELECT``, :data:`SIGN_OF_LIFE` and
:func:`last_seen_of`. To change what ``last_seen`` means (the node recording each farmer's last
request, say), change those, and every view follows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from downstream_tx.db.database import Database, Txn

PROTOCOL_NAMES = {0: "v0", 1: "v1"}


@dataclass(frozen=True)
class FarmerSummary:
    id: int  # token row id (the paging key)
    farmer_id: str
    address: str
    protocol: str  # "v0", "v1", "v0+v1" or "" (no contract yet)
    contracts: int  # active contracts
    contracts_total: int
    passes: int
    fails: int
    misses: int
    created: float
    #: the farmer's latest request (or a later sign of life: token creation, a contract start, the
    #: window of its latest answered challenge)
    last_seen: float
    #: holds an active contract that is not in a run of misses or fails (as downstream_farmers_online)
    online: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


#: when the farmer last showed itself on a contract ``c``, from what the contract row keeps (a SQL
#: expression; archiving keeps its maximum per token, ``db/archive.py``). v1: the farmer fetched the
#: current challenge after the previous one was due (``due`` - one interval per window, those asked
#: again in containment too). v0: the current window's start when its challenge is answered; else,
#: once it has passed any, the start of the last window it passed (before the ``run`` of misses or
#: fails and the windows asked again in containment).
SIGN_OF_LIFE = ("CASE WHEN c.protocol = 1 THEN c.due - (c.contained + 1) * c.interval_s "
                "WHEN c.answered = 1 THEN c.issued "
                "WHEN c.passes > 0 THEN c.issued - (c.run + c.contained + 1) * c.interval_s END")

_SELECT = (
    "SELECT t.id, t.farmer_id, t.address, t.created, "
    "SUM(CASE WHEN c.state = 'active' THEN 1 ELSE 0 END), COUNT(c.id), "
    "COALESCE(SUM(c.passes), 0), COALESCE(SUM(c.fails), 0), COALESCE(SUM(c.misses), 0), "
    "MAX(CASE WHEN c.protocol = 0 THEN 1 ELSE 0 END), MAX(CASE WHEN c.protocol = 1 THEN 1 ELSE 0 END), "
    "MAX(c.start), "
    f"MAX({SIGN_OF_LIFE}), "
    "MAX(CASE WHEN c.state = 'active' AND c.run = 0 THEN 1 ELSE 0 END), "
    # what archiving moved out of contracts (db/archive.py): one row per token, so MAX is its value
    "MAX(a.ended + a.failed), MAX(a.passes), MAX(a.fails), MAX(a.misses), MAX(a.v0), MAX(a.v1), "
    "MAX(a.last_start), MAX(a.last_answered), MAX(t.last_seen) "
    "FROM tokens t LEFT JOIN contracts c ON c.token_id = t.id LEFT JOIN contract_totals a ON a.token_id = t.id "
)
_GROUP = " GROUP BY t.id, t.farmer_id, t.address, t.created"


def last_seen_of(created: float, *signs: float | None) -> float:
    """What ``last_seen`` means: the farmer's latest request, as the node records it (``tokens.last_seen``,
    written at most every ``last_seen_every`` seconds: db/tokens.py ``seen_txn``), or any later sign of
    life the database holds — the token's creation, a contract's start, or a contract's
    :data:`SIGN_OF_LIFE` (archived contracts included; what a token from before the node recorded
    requests shows)."""
    return max(float(x) for x in (created, *signs) if x is not None)


def _row(r: Sequence[Any]) -> FarmerSummary:
    (token_id, farmer_id, address, created, active, total, passes, fails, misses, v0, v1, started, answered,
     online, a_total, a_passes, a_fails, a_misses, a_v0, a_v1, a_started, a_answered, requested) = r
    protocols = "+".join(name for flag, name in ((v0 or a_v0, "v0"), (v1 or a_v1, "v1")) if flag)
    seen = last_seen_of(created, started, answered, a_started, a_answered, requested)
    return FarmerSummary(int(token_id), farmer_id, address, protocols, int(active or 0),
                         int(total or 0) + int(a_total or 0), int(passes) + int(a_passes or 0),
                         int(fails) + int(a_fails or 0), int(misses) + int(a_misses or 0), float(created), seen,
                         bool(online))


def list_txn(txn: Txn, after_id: int = 0, limit: int = 500) -> list[FarmerSummary]:
    """Live farmers (tokens not deleted) with ids above ``after_id``, oldest first, at most ``limit``:
    pass the last row's ``id`` as ``after_id`` for the next page."""
    return [_row(r) for r in txn.execute(
        _SELECT + "WHERE t.deleted IS NULL AND t.id > ?" + _GROUP + " ORDER BY t.id LIMIT ?", (after_id, limit)
    ).fetchall()]


def by_farmer_ids_txn(txn: Txn, farmer_ids: Sequence[str]) -> list[FarmerSummary]:
    rows = txn.select_in(_SELECT + "WHERE t.farmer_id IN {ids}" + _GROUP, list(farmer_ids))
    return sorted((_row(r) for r in rows), key=lambda f: f.id)


def farmer_ids_by_address_txn(txn: Txn, address: str) -> list[str]:
    """Farmer ids of every token (live or deleted) of an address, oldest first."""
    return [r[0] for r in txn.execute("SELECT farmer_id FROM tokens WHERE address = ? ORDER BY id",
                                      (address,)).fetchall()]


@dataclass(frozen=True)
class FailedContract:
    contract_id: int
    farmer_id: str
    file_hash: str
    protocol: int
    reason: str | None


def failed_contracts_txn(txn: Txn, contract_ids: Sequence[int]) -> list[FailedContract]:
    """Farmer id and file hash of contracts (for the log line naming each failed contract; never a
    token), in id order."""
    rows = txn.select_in(
        "SELECT c.id, t.farmer_id, f.file_hash, c.protocol, c.end_reason FROM contracts c "
        "JOIN tokens t ON t.id = c.token_id JOIN files f ON f.id = c.file_id WHERE c.id IN {ids}", list(contract_ids))
    return sorted((FailedContract(int(r[0]), r[1], r[2], int(r[3]), r[4]) for r in rows),
                  key=lambda c: c.contract_id)


class FarmerStore:
    """Farmers as the operator sees them, and the farmer and file of failed contracts."""

    def __init__(self, db: Database):
        self.db = db

    def list(self, after_id: int = 0, limit: int = 500):
        """Fires with a page of live farmers: see :func:`list_txn`."""
        return self.db.run("list_farmers", list_txn, after_id, limit)

    def by_farmer_ids(self, farmer_ids: Sequence[str]):
        """Fires with the :class:`FarmerSummary` of each token among ``farmer_ids``, oldest first."""
        return self.db.run("farmer_summaries", by_farmer_ids_txn, list(farmer_ids))

    def ids_by_address(self, address: str):
        """Fires with the farmer ids of every token (live or deleted) of ``address``, oldest first."""
        return self.db.run("farmer_ids_by_address", farmer_ids_by_address_txn, address)

    def failed_contracts(self, contract_ids: Sequence[int]):
        """Fires with a :class:`FailedContract` for each of ``contract_ids`` (in id order)."""
        return self.db.run("failed_contracts", failed_contracts_txn, list(contract_ids))
