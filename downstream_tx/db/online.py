"""Was a farmer active? What the stores read to keep offline apart from failing (the rules:
domain/online.py). A farmer is a payout address: its latest request is the latest ``last_seen``
of any of its tokens."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from downstream_tx.db.database import Txn
from downstream_tx.domain.online import OnlineRules, was_active


def last_seen_by_address_txn(txn: Txn, addresses: Iterable[str]) -> dict[str, float | None]:
    """The latest request of each address's farmer (None: none recorded)."""
    return {a: None if seen is None else float(seen) for a, seen in txn.select_in(
        "SELECT address, MAX(last_seen) FROM tokens WHERE address IN {ids} GROUP BY address", sorted(set(addresses)))}


def offline_among_txn(txn: Txn, rules: OnlineRules, windows: Sequence[tuple[int, float, float]]) -> set[int]:
    """The contracts among ``windows`` (contract id, deadline, interval of its unanswered challenge)
    whose farmer made no request in the challenge's window: offline, not failing."""
    if not windows:
        return set()
    # by primary key twice, not a join: with few tokens the server's planner starts from the token
    # and walks each of its contracts (0.5 s for one token of 1M contracts on MariaDB)
    token_of = {int(cid): int(tid) for cid, tid in txn.select_in(
        "SELECT id, token_id FROM contracts WHERE id IN {ids}", sorted({int(w[0]) for w in windows}))}
    address_by_token = {int(tid): address for tid, address in txn.select_in(
        "SELECT id, address FROM tokens WHERE id IN {ids}", sorted(set(token_of.values())))}
    address_of = {cid: address_by_token[tid] for cid, tid in token_of.items() if tid in address_by_token}
    seen = last_seen_by_address_txn(txn, address_of.values())
    return {int(cid) for cid, deadline, interval in windows
            if int(cid) in address_of
            and not was_active(seen.get(address_of[int(cid)]), float(deadline), float(interval), rules)}
