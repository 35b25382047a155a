"""Was a farmer active? What the stores read to keep offline apart from failing (the rules:
domain/online.py). A farmer is a payout address: its latest request is the latest ``last_seen``
of any of its tokens."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

from downstream_tx.db.database import Txn
from downstream_tx.domain.online import OnlineRules, was_active


class Farmer(NamedTuple):
    """A token's farmer as the timer passes need it."""

    address: str
    #: the latest request of any token of the address (None: none recorded)
    last_seen: float | None
    #: it has a reputation row
    known: bool


def farmers_of_tokens_txn(txn: Txn, token_ids: Iterable[int]) -> dict[int, Farmer]:
    """Each token's :class:`Farmer`, in one statement per batch of tokens (by primary key, not a
    join from the contracts: with few tokens a server's planner starts from the token and walks
    each of its contracts — 0.5 s for one token of 1M contracts on MariaDB)."""
    return {int(tid): Farmer(str(address), None if seen is None else float(seen), known is not None)
            for tid, address, seen, known in txn.select_in(
                "SELECT t.id, t.address, (SELECT MAX(s.last_seen) FROM tokens s WHERE s.address = t.address), "
                "r.address FROM tokens t LEFT JOIN reputation r ON r.address = t.address WHERE t.id IN {ids}",
                sorted({int(t) for t in token_ids}))}


def offline_among(rules: OnlineRules, windows: Sequence[tuple[int, float, float]],
                  farmer_of: Mapping[int, Farmer]) -> set[int]:
    """The contracts among ``windows`` (contract id, deadline, interval of its unanswered challenge)
    whose farmer (``farmer_of``: by contract id) made no request in the challenge's window:
    offline, not failing. A contract without a farmer is not offline."""
    return {int(cid) for cid, deadline, interval in windows
            if int(cid) in farmer_of
            and not was_active(farmer_of[int(cid)].last_seen, float(deadline), float(interval), rules)}


def farmers_of_contracts_txn(txn: Txn, ids: Iterable[int]) -> dict[int, Farmer]:
    """The :class:`Farmer` of each contract among ``ids`` (by primary key twice)."""
    token_of = {int(cid): int(tid) for cid, tid in txn.select_in(
        "SELECT id, token_id FROM contracts WHERE id IN {ids}", sorted({int(i) for i in ids}))}
    farmers = farmers_of_tokens_txn(txn, token_of.values())
    return {cid: farmers[tid] for cid, tid in token_of.items() if tid in farmers}


def offline_among_txn(txn: Txn, rules: OnlineRules, windows: Sequence[tuple[int, float, float]]) -> set[int]:
    """:func:`offline_among`, the farmers read here."""
    if not windows:
        return set()
    return offline_among(rules, windows, farmers_of_contracts_txn(txn, [w[0] for w in windows]))
