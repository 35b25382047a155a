"""Tokens (stored as SHA-256 only), addresses and the whitelist.

Every farmer request starts with :func:`lookup_txn` in its own transaction: one round trip looks
the token up and does the work.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from downstream_tx.db import archive, counters, ratelimits, reputation
from downstream_tx.db.database import Database, Txn
from downstream_tx.db.replicas import end_where_txn
from downstream_tx.domain.online import DEFAULT_ONLINE, OnlineRules, should_record
from downstream_tx.domain.rules import Rules

TOKEN_COLUMNS = "id, farmer_id, address, ip_hash, hbcount, created, location, last_seen"


class UnknownToken(Exception):
    """No live token has this hash (each protocol words the error its own way)."""


class IpLimitReached(Exception):
    """The client address already holds the most tokens allowed per address."""


@dataclass(frozen=True)
class TokenRow:
    id: int
    farmer_id: str
    address: str
    ip_hash: str | None
    hbcount: int
    created: float
    location: str | None
    #: when the token's farmer last made a request (written at most every ``last_seen_every``)
    last_seen: float | None = None


@dataclass(frozen=True)
class TokenFacts:
    """What the token rules look at before a new token is given out."""

    address: str
    #: the address's whitelist balance, None when it is not (actively) whitelisted
    balance: int | None
    #: live tokens of the address, and of the client's address (0 without one)
    by_address: int
    by_ip: int


def _token(row: tuple | None) -> TokenRow | None:
    return None if row is None else TokenRow(*row)


def lookup_txn(txn: Txn, token_hash: bytes, now: float | None = None,
               online: OnlineRules = DEFAULT_ONLINE) -> TokenRow:
    """The live token with this hash, or :class:`UnknownToken`. ``now``: a request of its farmer
    at that time (:func:`seen_txn`)."""
    row = _token(txn.execute(
        f"SELECT {TOKEN_COLUMNS} FROM tokens WHERE token_hash = ? AND deleted IS NULL", (token_hash,)
    ).fetchone())
    if row is None:
        raise UnknownToken()
    return seen_txn(txn, row, now, online)


def seen_txn(txn: Txn, row: TokenRow, now: float | None, online: OnlineRules = DEFAULT_ONLINE) -> TokenRow:
    """The token's farmer made a request at ``now`` (None: not a farmer's request): its
    ``last_seen`` is written only when the rule asks for it (domain/online.py ``should_record``:
    at most once per ``last_seen_every`` seconds, at least once per online window it is seen in), so
    nearly every request writes nothing."""
    if now is not None and should_record(row.last_seen, now, online):
        txn.execute("UPDATE tokens SET last_seen = ? WHERE id = ?", (now, row.id))
    return row


def count_by_ip_txn(txn: Txn, ip_hash: str) -> int:
    return int(txn.scalar("SELECT COUNT(*) FROM tokens WHERE ip_hash = ? AND deleted IS NULL", (ip_hash,)))


def use_from_ip_txn(txn: Txn, row: TokenRow, ip_hash: str | None, ip_limit: int, move: bool,
                    location: str | None = None, country: str | None = None) -> None:
    """A token used from another client address: that address must be under ``ip_limit`` tokens
    (0: no limit), else :class:`IpLimitReached`; with ``move`` the token moves to it and takes its
    GeoIP ``location`` and ``country`` (looked up before the transaction; None when unknown)."""
    if ip_hash is None or row.ip_hash == ip_hash:
        return
    if ip_limit:
        ratelimits.lock_key_txn(txn, "ip:" + ip_hash)
    if ip_limit and count_by_ip_txn(txn, ip_hash) >= ip_limit:
        raise IpLimitReached()
    if move:
        txn.execute("UPDATE tokens SET ip_hash = ?, location = ?, country = ? WHERE id = ?",
                    (ip_hash, location, country, row.id))


def delete_txn(txn: Txn, token_id: int, now: float) -> int:
    """Mark the token deleted and end its active contracts. Returns the contracts ended."""
    ended = end_where_txn(txn, "token_id = ?", (token_id,), now, "token_deleted")
    gone = txn.execute("UPDATE tokens SET deleted = ? WHERE id = ? AND deleted IS NULL", (now, token_id)).rowcount
    txn.count({counters.LIVE_TOKENS: -gone})
    return ended


def summary_for_tokens_txn(txn: Txn, token_ids: Sequence[int]) -> dict[str, int]:
    """Counts of contracts by state, heartbeat counters and v0 download counts (db/downloads.py)
    over some tokens (admin farmer show)."""
    counters = ("passes", "fails", "misses", "downloads", "redownloads", "downloads_refused")
    out = {"active": 0, "ended": 0, "failed": 0, **dict.fromkeys(counters, 0)}
    for state, n, *sums in txn.select_in(
        f"SELECT state, COUNT(*), {', '.join(f'SUM({c})' for c in counters)} FROM contracts "
        "WHERE token_id IN {ids} GROUP BY state", token_ids
    ):
        out[state] = out.get(state, 0) + int(n)
        for key, value in zip(counters, sums):
            out[key] += int(value or 0)
    for archived in archive.totals_txn(txn, token_ids).values():  # contracts archiving moved out
        for key in ("ended", "failed") + counters:
            out[key] += getattr(archived, key)
    return out


class TokenStore:
    def __init__(self, db: Database, rules: Rules | None = None):
        self.db = db
        #: the node's reputation rules: when a request writes last_seen, a new farmer's scores
        self.rules = rules or Rules()

    def create(self, token_hash: bytes, farmer_id: str, address: str, ip_hash: str | None, now: float,
               admit: Callable[[TokenFacts], None], message: str | None = None, signature: str | None = None,
               location: str | None = None, country: str | None = None):
        """Insert a token once ``admit(facts)`` has accepted it (it raises to refuse), in one
        transaction so concurrent requests cannot both pass a limit. ``location``: the status API's
        GeoIP dict as JSON text, ``country`` its country (the dashboard's count per country).
        Fires with the row id."""

        def body(txn: Txn) -> int:
            # the counts below and the insert are one step for every instance (db/ratelimits.py)
            ratelimits.lock_key_txn(txn, "address:" + ratelimits.digest(address), now)
            if ip_hash:
                ratelimits.lock_key_txn(txn, "ip:" + ip_hash, now)
            balance = txn.scalar("SELECT balance FROM addresses WHERE address = ? AND active = 1", (address,))
            admit(TokenFacts(
                address=address,
                balance=None if balance is None else int(balance),
                by_address=int(txn.scalar("SELECT COUNT(*) FROM tokens WHERE address = ? AND deleted IS NULL",
                                          (address,))),
                by_ip=count_by_ip_txn(txn, ip_hash) if ip_hash else 0,
            ))
            txn.execute(
                "INSERT INTO tokens (token_hash, farmer_id, address, ip_hash, location, country, message, signature, "
                "created, last_seen) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",  # asking for it: a request
                (token_hash, farmer_id, address, ip_hash, location, country, message, signature, now, now),
            )
            token_id = txn.lastrowid
            txn.count({counters.LIVE_TOKENS: 1})
            reputation.ensure_txn(txn, [address], self.rules)  # the farmer (its address) has a reputation
            return token_id

        return self.db.run("create_token", body)

    def get(self, token_hash: bytes, now: float | None = None):
        """Fires with the live :class:`TokenRow` of ``token_hash`` (or fails with UnknownToken);
        ``now``: a request of its farmer (its last_seen)."""
        return self.db.run_short("get_token", lookup_txn, token_hash, now, self.rules.online)

    def delete(self, token_hash: bytes, now: float):
        """Delete a token; its active contracts end. Fires with ``(row, contracts ended)``."""

        def body(txn: Txn) -> tuple[TokenRow, int]:
            row = lookup_txn(txn, token_hash)
            return row, delete_txn(txn, row.id, now)

        return self.db.run("delete_token", body)

    def farmer(self, farmer_id: str):
        """Fires with ``(tokens of the farmer id, contract summary)``, or None for an unknown id."""

        def body(txn: Txn) -> tuple[list[TokenRow], dict[str, int]] | None:
            rows = [TokenRow(*r) for r in txn.execute(
                f"SELECT {TOKEN_COLUMNS} FROM tokens WHERE farmer_id = ? ORDER BY id", (farmer_id,)
            ).fetchall()]
            if not rows:
                return None
            return rows, summary_for_tokens_txn(txn, [r.id for r in rows])

        return self.db.run("farmer", body)

    def import_whitelist(self, rows: Iterable[tuple[str, int]], replace: bool, now: float):
        """Add or update whitelist rows. With ``replace``, addresses missing from ``rows`` are
        deactivated and their tokens' contracts end (history is kept). Fires with the counts."""
        return self.db.run("import_whitelist", _import_whitelist_txn, list(rows), replace, now)

    def count(self, ip_hash: str | None = None):
        """Fires with the number of token rows (deleted ones included), or of those with ``ip_hash``."""
        if ip_hash is None:
            return self.db.run("count_tokens", lambda txn: int(txn.scalar("SELECT COUNT(*) FROM tokens")))
        return self.db.run("count_tokens", lambda txn: int(txn.scalar(
            "SELECT COUNT(*) FROM tokens WHERE ip_hash = ?", (ip_hash,))))

    def heartbeats_total(self):
        """Fires with the heartbeats counted over every token."""
        return self.db.run("heartbeats_total", lambda txn: int(txn.scalar(
            "SELECT COALESCE(SUM(hbcount), 0) FROM tokens")))

    def whitelist_size(self):
        """Fires with the number of whitelist rows, active or not."""
        return self.db.run("whitelist_size", lambda txn: int(txn.scalar("SELECT COUNT(*) FROM addresses")))


def _import_whitelist_txn(txn: Txn, rows: list[tuple[str, int]], replace: bool, now: float) -> dict[str, int]:
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
