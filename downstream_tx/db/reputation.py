"""Farmer reputation, persisted (docs/operations.md, "Reputation"): each farmer's ``reputation``
row, the contracts' containment columns and the vetting counters.

A *farmer* is a payout address: every token of an address shares one ``reputation`` row, so a new
token for the same address starts where the old one stands (it cannot escape containment or a
disqualification).

The rules are the domain's (``downstream_tx/domain/``): the score arithmetic (``scores``), the
standing changes (``standing``), containment (``containment``), eligibility and the vetting share
(``vetting``). The functions here read the rows a rule needs, call it, and write what it decided in
the same transaction. Two writes stay set-based for speed, with every value they use computed by
the domain (tests/test_db_agreement.py checks SQL and function agree on both engines):
the results of a farmer that can change no standing are one linear ``UPDATE`` (``column * scale +
add``, the coefficients of :func:`~downstream_tx.domain.scores.changes`), and the vetting share is
one guarded ``UPDATE`` of its counter row (:func:`~downstream_tx.domain.vetting.within_share`).
The results of many farmers at once (a timer pass's misses) are a bounded number of statements
whatever their number: their rows read in one locked statement, then the same linear ``UPDATE`` per
kind of tally (:func:`record_txn`).
"""

from __future__ import annotations

import functools
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from downstream_tx.db import meta
from downstream_tx.db import online as online_db
from downstream_tx.db.database import Database, Txn
from downstream_tx.db.replicas import FAILED, end_where_txn, retire_v1_txn
from downstream_tx.domain import containment, online, scores, standing, vetting
from downstream_tx.domain.rules import DISQUALIFIED, INITIAL_ALPHA, OFFLINE, OK, SUSPENDED, Rules, initial_alpha
from downstream_tx.domain.scores import COUNTS, SCORES, Scores, Tally, score
from downstream_tx.domain.standing import StandingChange

# --- recording --------------------------------------------------------------------------------

def ensure_txn(txn: Txn, addresses: Iterable[str], rules: Rules | None = None) -> None:
    """A reputation row (fresh scores: each at the steady state of its own factor) for each address
    that has none."""
    verb = "INSERT OR IGNORE" if txn.engine_name == "sqlite" else "INSERT IGNORE"
    rules = rules or Rules()
    unknown, up = initial_alpha(rules.unknown_lam), initial_alpha(rules.online.lam)
    txn.executemany(f"{verb} INTO reputation (address, unknown_alpha, online_alpha) VALUES (?, ?, ?)",
                    [(a, unknown, up) for a in sorted(set(addresses))])


@functools.cache
def _linear_statement(where: str, changing: tuple[str, ...], counts: tuple[str, ...]) -> str:
    """The linear UPDATE of a farmer's row (``WHERE <where>``) for the scores and counts a tally
    changes; its values are :func:`_linear_values` then the ``where`` value. Built once per shape."""
    sets = [f"{name}_{part} = {name}_{part} * ? + ?" for name in changing for part in ("alpha", "beta")]
    sets += [f"{column} = {column} + ?" for column in counts]
    return f"UPDATE reputation SET {', '.join(sets + ['updated = ?'])} WHERE {where}"


def _linear_values(delta: Mapping[str, tuple[float, float, float]], tally: Tally,
                   counts: tuple[str, ...], now: float) -> list[Any]:
    values: list[Any] = []
    for scale, alpha_add, beta_add in delta.values():
        values += [scale, alpha_add, scale, beta_add]
    return values + [getattr(tally, c) for c in counts] + [now]


_SCORE_COLUMNS = ", ".join(f"{name}_{part}" for name in SCORES for part in ("alpha", "beta"))


def _decide(row: Sequence[Any], tally: Tally, rules: Rules) -> tuple[Scores, standing.Standing | None]:
    """A farmer's scores after ``tally`` and the change of standing they make (None: none), by the
    domain, from its reputation row as read (``address, status``, then the six score columns)."""
    values = [float(x) for x in row[2:8]]
    before = Scores(*(tuple(values[i:i + 2]) for i in range(0, 6, 2)))
    after = scores.apply(before, tally, rules.lam, rules.unknown_lam)
    return after, standing.decide(str(row[1]), after, tally, rules)


def _record(txn: Txn, rules: Rules, now: float, tally: Tally, where: str, arg: Any) -> bool:
    """Apply one farmer's tally (the farmer: ``WHERE <where>`` with ``arg``); False when it has no
    reputation row yet. A change of status is noted on the transaction (:class:`StandingChange`).

    A tally that can change no standing of a farmer in good standing
    (:func:`~downstream_tx.domain.standing.may_change`) — nearly every one — is one linear UPDATE
    guarded on that standing, nothing read; otherwise (or when the guard did not match) the row is
    read under its lock, the domain computes its scores and standing, and both are written."""
    delta = scores.changes(tally, rules.lam, rules.unknown_lam)
    counts = tuple(c for c in COUNTS if getattr(tally, c))
    if not standing.may_change(tally, OK):
        sql = _linear_statement(f"{where} AND status <> '{SUSPENDED}'", tuple(delta), counts)
        if txn.execute(sql, [*_linear_values(delta, tally, counts, now), arg]).rowcount:
            return True
    row = txn.execute(f"SELECT address, status, {_SCORE_COLUMNS} FROM reputation WHERE {where}" + txn.for_update(),
                      (arg,)).fetchone()
    if row is None:
        return False
    address, status = str(row[0]), str(row[1])
    after, change = _decide(row, tally, rules)
    sets = [f"{name}_{part} = ?" for name in delta for part in ("alpha", "beta")]
    args: list[Any] = [x for name in delta for x in getattr(after, name)]
    sets += [f"{column} = {column} + ?" for column in counts]
    args += [getattr(tally, c) for c in counts]
    if change is not None:
        sets += ["status = ?", "status_since = ?", "status_reason = ?"]
        args += [change.status, now, change.reason]
        if change.status == DISQUALIFIED:
            sets.append("pending_end = 1")  # the reputation job ends its contracts
    txn.execute(f"UPDATE reputation SET {', '.join(sets)}, updated = ? WHERE address = ?", [*args, now, address])
    if change is not None:
        txn.note(StandingChange(address, status, change.status, change.reason))
    return True


def record_token_txn(txn: Txn, rules: Rules, now: float, token_id: int, tally: Tally) -> None:
    """Record one token's results (the v0 answer: the farmer found by a subquery); the caller ends
    the contract's containment itself."""
    where = "address = (SELECT address FROM tokens WHERE id = ?)"
    if not _record(txn, rules, now, tally, where, token_id):  # no reputation row yet
        ensure_txn(txn, [txn.scalar("SELECT address FROM tokens WHERE id = ?", (token_id,))], rules)
        _record(txn, rules, now, tally, where, token_id)


def record_txn(txn: Txn, rules: Rules, now: float, tallies: Mapping[str, Tally]) -> None:
    """Apply each farmer's results: its scores, counts and the standing they leave it in
    (:func:`~downstream_tx.domain.standing.decide`). Farmers in address order (one lock order for
    every transaction). One farmer: :func:`_record` (nearly always one linear UPDATE). More (a
    timer pass's misses spread over many farmers): a bounded number of statements whatever their
    number (:func:`_record_many`)."""
    active = sorted(address for address, tally in tallies.items() if tally)
    # a case-insensitive collation would match two of these to one row: each its own record then
    if len(active) > 1 and len({a.casefold() for a in active}) == len(active):
        _record_many(txn, rules, now, {a: tallies[a] for a in active})
        return
    for address in active:
        _record(txn, rules, now, tallies[address], "address = ?", address)


def _record_many(txn: Txn, rules: Rules, now: float, tallies: Mapping[str, Tally]) -> None:
    """:func:`_record` for many farmers at once (``tallies``: in address order, none empty): their
    rows read under their locks in address order (``IN_BATCH`` a statement), the domain computes
    each one's scores and standing as :func:`_record` does. The farmers whose standing stays are
    written by the linear UPDATE of their tally (the same values: :func:`_record`'s fast path), one
    per kind of tally and ``IN_BATCH`` farmers — a pass's misses are nearly all one kind, a miss or
    two; those whose standing changes (few) by one joined UPDATE of their new values per chunk.
    A farmer without a reputation row is left out (as :func:`_record`); standing changes are noted
    in address order."""
    rows = txn.select_in(f"SELECT address, status, {_SCORE_COLUMNS}, pending_end, {', '.join(COUNTS)} "
                         "FROM reputation WHERE address IN {ids} ORDER BY address" + txn.for_update(), list(tallies))
    by_key = {a.casefold(): a for a in tallies}
    linear: dict[tuple[int, ...], list[str]] = defaultdict(list)
    changed: list[tuple[Any, ...]] = []
    for row in sorted(rows, key=lambda r: str(r[0])):
        address, status = str(row[0]), str(row[1])
        tally = tallies.get(address) or tallies[by_key[address.casefold()]]
        after, change = _decide(row, tally, rules)
        if change is None:
            linear[tuple(getattr(tally, c) for c in COUNTS)].append(address)
            continue
        txn.note(StandingChange(address, status, change.status, change.reason))
        # the reputation job ends a disqualified farmer's contracts (``pending_end``)
        changed.append((address, change, after, tally, int(row[8] or 0), [int(n or 0) for n in row[9:]]))
    for kind, addresses in linear.items():
        tally = Tally(*kind)
        delta = scores.changes(tally, rules.lam, rules.unknown_lam)
        counts = tuple(c for c in COUNTS if getattr(tally, c))
        txn.update_in(_linear_statement("address IN {ids}", tuple(delta), counts), addresses,
                      before=_linear_values(delta, tally, counts, now))
    columns = ["status", "status_since", "status_reason", "pending_end",
               *(f"{name}_{part}" for name in SCORES for part in ("alpha", "beta")), *COUNTS, "updated"]
    txn.update_by_id("reputation", columns, [
        (address, change.status, now, change.reason, 1 if change.status == DISQUALIFIED else pending,
         *(x for name in SCORES for x in getattr(after, name)),
         *(n + getattr(tally, c) for c, n in zip(COUNTS, counts)), now)
        for address, change, after, tally, pending, counts in changed], key="address")


def record_contracts_txn(txn: Txn, rules: Rules, now: float, passes: Sequence[int] = (), fails: Sequence[int] = (),
                         misses: Sequence[int] = (), retries: Sequence[int] = (), token_id: int | None = None) -> None:
    """Record challenge results by contract id (each contract's farmer is its token's address): the
    hook the protocols call in the transaction that records the results. A pass, a fail or a counted
    miss ends the contract's containment. ``token_id``: only that token's contracts count (ids sent
    by a farmer)."""
    ids = sorted({int(i) for group in (passes, fails, misses, retries) for i in group})
    if not ids:
        return
    # the contracts, then their farmers, by primary key (not a join: see db/online.py)
    contracts = txn.select_in("SELECT id, token_id, contained FROM contracts WHERE id IN {ids}"
                              + ("" if token_id is None else " AND token_id = ?"), ids,
                              after=() if token_id is None else (token_id,))
    farmers = online_db.farmers_of_tokens_txn(txn, [c[1] for c in contracts])
    rows = [(int(cid), farmers[int(tid)], int(contained or 0)) for cid, tid, contained in contracts
            if int(tid) in farmers]
    record_farmers_txn(txn, rules, now, rows, passes, fails, misses, retries)


def record_farmers_txn(txn: Txn, rules: Rules, now: float, rows: Sequence[tuple[int, online_db.Farmer, int]],
                       passes: Sequence[int] = (), fails: Sequence[int] = (), misses: Sequence[int] = (),
                       retries: Sequence[int] = (), clear: bool = True) -> list[int]:
    """:func:`record_contracts_txn` for contracts whose farmers the caller read (``rows``: contract
    id, :class:`~downstream_tx.db.online.Farmer`, ``contained``; a contract not among them counts for
    no one). Returns the ids whose containment the results end (``contained`` > 0 and a pass, fail or
    counted miss); their ``contained`` is set to 0 here, or, with ``clear`` false, by the caller (the
    v0 pass, in the row's one UPDATE: its rows are locked already)."""
    ids = {int(i) for group in (passes, fails, misses, retries) for i in group}
    rows = [row for row in rows if row[0] in ids]
    if not rows:
        return []
    address_of = {cid: farmer.address for cid, farmer, _ in rows}
    ensure_txn(txn, [farmer.address for _, farmer, _ in rows if not farmer.known], rules)
    tallies: dict[str, Tally] = defaultdict(Tally)
    for column, group in (("passes", passes), ("fails", fails), ("misses", misses), ("retries", retries)):
        for cid in group:
            address = address_of.get(int(cid))
            if address is not None:
                setattr(tallies[address], column, getattr(tallies[address], column) + 1)
    settled = {int(i): containment.PASS for i in passes} | {int(i): containment.FAIL for i in fails} \
        | {int(i): containment.MISS for i in misses}
    ended = sorted(cid for cid, _, contained in rows if contained and cid in settled)
    if clear:
        txn.update_in("UPDATE contracts SET contained = 0 WHERE id IN {ids} AND contained > 0", ended)
    for change in containment.changes([(cid, farmer.address, contained) for cid, farmer, contained in rows],
                                      settled, {int(i) for i in retries}, rules):
        txn.note(change)
    record_txn(txn, rules, now, tallies)
    return ended


def contained_among_txn(txn: Txn, token_id: int, ids: Iterable[int]) -> list[int]:
    """The ids among ``ids`` of the token's contracts that are in containment now (read before an
    answer ends it, to note that it did)."""
    wanted = {int(i) for i in ids}
    if not wanted:
        return []
    return sorted(int(r[0]) for r in txn.execute(
        "SELECT id FROM contracts WHERE contained > 0 AND token_id = ?", (token_id,)).fetchall() if int(r[0]) in wanted)


def note_left_txn(txn: Txn, rules: Rules, address: str, protocol: int, results: Iterable[tuple[int, str]]) -> None:
    """Note that an answer took contracts of ``address`` out of containment (``results``: contract id,
    ``pass`` or ``fail``)."""
    change = containment.left(address, protocol, results, rules)
    if change is not None:
        txn.note(change)


def move_counts_token_txn(txn: Txn, token_id: int, fails: int = 0, misses: int = 0) -> None:
    """Change a token's farmer's ``fails`` and ``misses`` counts without touching its scores (a
    late answer that settles a miss the timer counted: :func:`downstream_tx.domain.verdicts.effect`);
    a count never goes below 0."""
    txn.execute("UPDATE reputation SET fails = CASE WHEN fails + ? < 0 THEN 0 ELSE fails + ? END, "
                "misses = CASE WHEN misses + ? < 0 THEN 0 ELSE misses + ? END "
                "WHERE address = (SELECT address FROM tokens WHERE id = ?)",
                (fails, fails, misses, misses, token_id))


def record_errors_txn(txn: Txn, rules: Rules, now: float, address: str, errors: int) -> None:
    """Count ``errors`` malformed requests or errors on the farmer's side (the unknown score)."""
    ensure_txn(txn, [address], rules)
    record_txn(txn, rules, now, {address: Tally(errors=errors)})


# --- containment ------------------------------------------------------------------------------

def contain_v0_txn(txn: Txn, rules: Rules, now: float, forgive: tuple[float, float] | None,
                   windows: Sequence[tuple[int, float, int, int, float, int]],
                   farmers: Sequence[tuple[int, online_db.Farmer, int]]) -> set[int]:
    """In the v0 timer pass, for the due contracts of the pass's page (locked by it) whose challenge
    went unanswered while their farmer was active (the pass leaves out those of farmers that were
    offline: db/online.py), as ``windows`` (contract id, start, interval, seq, deadline,
    contained): each one the domain asks again (:func:`~downstream_tx.domain.containment.
    reask_v0`) gets its challenge in the current window (``contained`` + 1, an online failure, no
    miss); the others are left to the pass, which counts their miss or forgives it (and the
    reputation's counted miss resets ``contained``). ``farmers``: the page's contracts with their
    farmers, as :func:`record_farmers_txn` takes them. Returns the ids asked again (the pass leaves
    them alone): deciding on the pass's own page means a contract is never judged missed without
    its containment first, nor counted twice."""
    if not containment.enabled(rules) or not windows:
        return set()
    again = []
    for cid, start, interval, seq, deadline, contained in windows:
        step = containment.reask_v0(now, start, interval, seq, deadline, int(contained), rules, forgive)
        if step is not None:
            again.append((cid, step.seq, step.issued, step.deadline, step.contained))
    txn.update_by_id("contracts", ["seq", "issued", "deadline", "contained"], again, where="state = 'active'")
    asked = {int(cid): int(contained) for cid, *_, contained in again}
    # (``contained`` as written now: a first re-ask enters containment)
    record_farmers_txn(txn, rules, now, [(cid, farmer, asked[cid]) for cid, farmer, _ in farmers if cid in asked],
                       retries=sorted(asked))
    return set(asked)


def contain_v1_txn(txn: Txn, rules: Rules, now: float, limit: int) -> tuple[int, list[int]]:
    """Before v1 expiry fails unanswered contracts: one the domain asks again
    (:func:`~downstream_tx.domain.containment.reask_v1`) gets the *same* challenge due later
    (``contained`` + 1, an online failure); the others the expiry fails (recorded here as counted
    misses). Returns (contracts contained, ids whose miss counts)."""
    rows = txn.execute(
        "SELECT id, due, interval_s, contained FROM contracts WHERE state = 'active' AND protocol = 1 "
        "AND deadline <= ? AND answered = 0 ORDER BY deadline LIMIT ?" + txn.for_update(),
        (now, limit)).fetchall()
    # a farmer that made no request in the challenge's window was offline: no containment, and the
    # expiry's miss is not an audit failure (its online windows count it: domain/online.py)
    offline = online_db.offline_among_txn(txn, rules.online, [(cid, due, interval) for cid, due, interval, _ in rows
                                                              if due is not None])
    again, counted = [], []
    for cid, due, interval, contained in rows:
        if int(cid) in offline:
            continue
        new_due = containment.reask_v1(now, due, interval, int(contained), rules)
        if new_due is None:
            counted.append(int(cid))
        else:
            again.append((cid, new_due, new_due, contained + 1))
    txn.update_by_id("contracts", ["due", "deadline", "contained"], again, where="state = 'active'")
    record_contracts_txn(txn, rules, now, misses=counted, retries=[cid for cid, *_ in again])
    return len(again), counted


# --- who gets new contracts -------------------------------------------------------------------

def eligible_txn(txn: Txn, rules: Rules, address: str, now: float | None = None) -> bool:
    """Whether the farmer is *preferred* (:func:`~downstream_tx.domain.vetting.eligible`, which
    raises :class:`~downstream_tx.domain.vetting.NotEligible` for a farmer that gets none; ``now``:
    its age is checked). The verdict is kept in the row's ``vetted`` (what ``farmer show`` reports)."""
    row = txn.execute("SELECT r.status, r.passes, r.audit_alpha, r.audit_beta, r.vetted, "
                      "(SELECT MIN(t.created) FROM tokens t WHERE t.address = r.address) "
                      "FROM reputation r WHERE r.address = ?", (address,)).fetchone()
    status, passes, alpha, beta, was, first = (OK, 0, INITIAL_ALPHA, 0.0, None, None) if row is None else row
    contained = txn.scalar("SELECT c.id FROM contracts c JOIN tokens t ON t.id = c.token_id WHERE c.contained > 0 "
                           "AND c.state = 'active' AND t.address = ? LIMIT 1", (address,)) is not None
    preferred = vetting.eligible(str(status), int(passes), float(alpha), float(beta), contained, rules,
                                 _age(first, now))
    if was is not None and bool(was) != preferred:
        txn.execute("UPDATE reputation SET vetted = ? WHERE address = ?", (int(preferred), address))
    return preferred


def _age(first_token: float | None, now: float | None) -> float:
    return math.inf if now is None or first_token is None else now - float(first_token)


def anyone_vetted_txn(txn: Txn, rules: Rules, now: float | None = None) -> bool:
    """Is any farmer in good standing vetted (its passes and, with a ``vetting_min_age`` and
    ``now``, its age)? If not, there is no one to prefer."""
    if rules.vetting_min_age > 0 and now is not None:
        return txn.scalar(
            "SELECT r.address FROM reputation r WHERE r.status = ? AND r.passes >= ? AND EXISTS "
            "(SELECT 1 FROM tokens t WHERE t.address = r.address AND t.created <= ?) LIMIT 1",
            (OK, rules.vetting_audits, now - rules.vetting_min_age)) is not None
    return txn.scalar("SELECT address FROM reputation WHERE status = ? AND passes >= ? LIMIT 1",
                      (OK, rules.vetting_audits)) is not None


def take_share_txn(txn: Txn, rules: Rules, protocol: int, preferred: bool, now: float | None = None) -> bool:
    """Count one newly assigned contract of ``protocol`` as the domain says
    (:func:`~downstream_tx.domain.vetting.share`: nothing while no farmer is vetted); one that must
    fit in the vetting share is one guarded UPDATE of the counter row
    (:func:`~downstream_tx.domain.vetting.within_share` in SQL: concurrent assignments queue on its
    row lock, so the share holds). The counters forget (:func:`~downstream_tx.domain.vetting.counted`).
    False: not now."""
    share = vetting.share(preferred, not preferred and anyone_vetted_txn(txn, rules, now))
    if not share.counted:
        return True
    keep = vetting.keep(rules)
    sql = "UPDATE vetting SET total = total * ? + 1, unvetted = unvetted * ? + ? WHERE protocol = ?"
    if not share.guarded:
        txn.execute(sql, (keep, keep, share.unvetted, protocol))
        return True
    return txn.execute(sql + " AND unvetted * ? + 1 <= ? * (total * ? + 1)",
                       (keep, keep, share.unvetted, protocol, keep, rules.vetting_share, keep)).rowcount > 0


def untake_share_txn(txn: Txn, rules: Rules, protocol: int, preferred: bool, now: float | None = None) -> None:
    """Give back a share taken for an assignment that did not happen (same transaction)."""
    share = vetting.share(preferred, not preferred and anyone_vetted_txn(txn, rules, now))
    if not share.counted:
        return
    keep = vetting.keep(rules)
    txn.execute("UPDATE vetting SET total = (total - 1) / ?, unvetted = (unvetted - ?) / ? WHERE protocol = ?",
                (keep, share.unvetted, keep, protocol))


# --- the reputation job -----------------------------------------------------------------------

@dataclass
class SweepResult:
    #: suspended farmers disqualified because their grace ran out
    expired: list[str] = field(default_factory=list)
    #: disqualified farmers whose contracts were ended, and how many
    ended: dict[str, int] = field(default_factory=dict)
    #: farmers whose online windows were counted; more are left to count
    online: int = 0
    online_more: bool = False


def sweep_txn(txn: Txn, rules: Rules, now: float, limit: int = 50) -> SweepResult:
    """Disqualify farmers suspended for longer than ``suspension_grace``
    (:func:`~downstream_tx.domain.standing.grace_cutoff`); end every active contract of (at most
    ``limit``) disqualified farmers that still hold some (their files' replica slots are freed: the
    repair path gives them to other farmers); count the farmers' online windows
    (:func:`online_windows_txn`)."""
    result = SweepResult()
    result.expired = [r[0] for r in txn.execute(
        "SELECT address FROM reputation WHERE status = ? AND status_since <= ? ORDER BY address" + txn.for_update(),
        (SUSPENDED, standing.grace_cutoff(now, rules))).fetchall()]
    txn.update_in("UPDATE reputation SET status = ?, status_since = ?, status_reason = ?, "
                  "pending_end = 1 WHERE address IN {ids} AND status = ?", result.expired,
                  before=[DISQUALIFIED, now, standing.GRACE_REASON], after=[SUSPENDED])
    for (address,) in txn.execute(
        "SELECT address FROM reputation WHERE status = ? AND pending_end = 1 ORDER BY address LIMIT ?",
        (DISQUALIFIED, limit)).fetchall():
        v1 = txn.execute("SELECT c.id, c.file_id FROM contracts c JOIN tokens t ON t.id = c.token_id "
                         "WHERE t.address = ? AND c.state = 'active' AND c.protocol = 1", (address,)).fetchall()
        result.ended[address] = end_where_txn(
            txn, "token_id IN (SELECT id FROM tokens WHERE address = ?)", (address,), now, "disqualified", FAILED)
        retire_v1_txn(txn, [int(c) for c, _ in v1], [int(f) for _, f in v1], now)  # as at expiry
        txn.execute("UPDATE reputation SET pending_end = 0 WHERE address = ?", (address,))
    result.online, result.online_more = online_windows_txn(txn, rules, now, limit)
    return result


def reinstate_txn(txn: Txn, address: str, now: float, rules: Rules | None = None) -> str | None:
    """The operator lifts a disqualification or suspension: status ok, scores as
    :func:`~downstream_tx.domain.standing.reinstated` (counts kept). Returns the status before, None
    for no such farmer; a farmer that is neither disqualified nor suspended is left as it is."""
    row = txn.execute(f"SELECT status, {_SCORE_COLUMNS} FROM reputation WHERE address = ?" + txn.for_update(),
                      (address,)).fetchone()
    if row is None or row[0] not in standing.REINSTATABLE:
        return None if row is None else str(row[0])
    values = [float(x) for x in row[1:]]
    fresh = standing.reinstated(Scores(*(tuple(values[i:i + 2]) for i in range(0, 6, 2))), rules)
    txn.execute(f"UPDATE reputation SET status = ?, status_since = ?, status_reason = ?, pending_end = 0, "
                f"{', '.join(f'{name}_{part} = ?' for name in SCORES for part in ('alpha', 'beta'))} "
                "WHERE address = ?", (OK, now, standing.REINSTATED_REASON,
                                      *(x for name in SCORES for x in getattr(fresh, name)), address))
    return str(row[0])


# --- online windows ---------------------------------------------------------------------------

#: node_meta: the online window of the reputation job's last pass (a window without one: the node
#: was not running, and farmers are not counted offline for it)
ONLINE_SWEPT = "online_swept"


def online_windows_txn(txn: Txn, rules: Rules, now: float, limit: int = 500) -> tuple[int, bool]:
    """Count the finished online windows of (at most ``limit``) farmers not counted up to the last
    one (domain/online.py ``count_windows``): each window once per farmer, online when it made a
    request in it, offline otherwise, in the online score; then the offline suspension or its end
    (``offline_change``) and the node's vetted verdict. A farmer suspended for being offline loses
    nothing more while away (``counted_for``). Windows the node itself did not run through are not
    counted for anyone. Returns (farmers counted, more left)."""
    o = rules.online
    last = online.window_of(now, o) - 1
    swept = meta.get_txn(txn, ONLINE_SWEPT)
    if swept is None or int(swept) < last:
        txn.execute("UPDATE reputation SET online_window = ? WHERE online_window IS NULL OR online_window < ?",
                    (last, last))
    if swept is None or int(swept) != last + 1:
        meta.set_txn(txn, ONLINE_SWEPT, str(last + 1).encode("ascii"))
    # nearly every pass (every tick) has nothing to count: two index lookups say so
    if txn.scalar("SELECT address FROM reputation WHERE online_window < ? LIMIT 1", (last,)) is None and \
            txn.scalar("SELECT address FROM reputation WHERE online_window IS NULL LIMIT 1") is None:
        return 0, False
    rows = txn.execute(
        "SELECT r.address, r.online_alpha, r.online_beta, r.online_window, r.status, r.passes, r.audit_alpha, "
        "r.audit_beta, MAX(t.last_seen), MIN(t.created) FROM reputation r LEFT JOIN tokens t ON t.address = r.address "
        "WHERE (r.online_window IS NULL OR r.online_window < ?) "
        "GROUP BY r.address, r.online_alpha, r.online_beta, r.online_window, r.status, r.passes, r.audit_alpha, "
        "r.audit_beta ORDER BY r.address LIMIT ?", (last, limit)).fetchall()
    for address, alpha, beta, counted, status, passes, a_alpha, a_beta, seen, first in rows:
        seen = None if seen is None else float(seen)
        w = online.counted_for(str(status), online.count_windows(None if counted is None else int(counted), seen,
                                                                 now, o))
        alpha, beta = online.decay(float(alpha), float(beta), w.successes, w.failures, o.lam)
        change = online.offline_change(str(status), online.score(alpha, beta), seen, now, o)
        preferred = vetting.preferred(int(passes), float(a_alpha), float(a_beta), _age(first, now), rules)
        sets, args = "online_alpha = ?, online_beta = ?, online_window = ?, vetted = ?", [alpha, beta, w.counted,
                                                                                          int(preferred)]
        if change is not None:
            reason = f"online score below {o.threshold:g}" if change == OFFLINE else "online score back"
            sets += ", status = ?, status_since = ?, status_reason = ?"
            args += [change, now, reason]
            txn.note(StandingChange(str(address), str(status), change, reason))
        txn.execute(f"UPDATE reputation SET {sets} WHERE address = ? AND status = ?", [*args, address, status])
    return len(rows), len(rows) == limit


# --- reading ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Reputation:
    address: str
    audit_alpha: float
    audit_beta: float
    online_alpha: float
    online_beta: float
    unknown_alpha: float
    unknown_beta: float
    passes: int
    fails: int
    misses: int
    retries: int
    errors: int
    status: str
    status_since: float | None
    status_reason: str | None
    #: active contracts in containment now
    contained: int = 0
    #: the node's own verdict (:func:`eligible_txn`, the online windows pass)
    vetted: bool = False
    #: the latest request of any of the address's tokens (None: none recorded)
    last_seen: float | None = None

    @property
    def audit_score(self) -> float:
        return score(self.audit_alpha, self.audit_beta)

    @property
    def online_score(self) -> float:
        return score(self.online_alpha, self.online_beta)

    @property
    def unknown_score(self) -> float:
        return score(self.unknown_alpha, self.unknown_beta)

    def as_dict(self, vetting_audits: int) -> dict[str, Any]:
        out = asdict(self)
        out.update(audit_score=self.audit_score, online_score=self.online_score, unknown_score=self.unknown_score)
        return out


_COLUMNS = ("address, audit_alpha, audit_beta, online_alpha, online_beta, unknown_alpha, unknown_beta, passes, "
            "fails, misses, retries, errors, status, status_since, status_reason, vetted, "
            "(SELECT MAX(t.last_seen) FROM tokens t WHERE t.address = reputation.address)")


def of_addresses_txn(txn: Txn, addresses: Sequence[str]) -> dict[str, Reputation]:
    """The reputation of each address that has one, with its contracts in containment."""
    wanted = sorted(set(addresses))
    contained = {a: int(n) for a, n in txn.select_in(
        "SELECT t.address, COUNT(*) FROM contracts c JOIN tokens t ON t.id = c.token_id WHERE c.contained > 0 "
        "AND c.state = 'active' AND t.address IN {ids} GROUP BY t.address", wanted)}
    out = {}
    for r in txn.select_in(f"SELECT {_COLUMNS} FROM reputation WHERE address IN {{ids}}", wanted):
        out[r[0]] = Reputation(r[0], *(float(x) for x in r[1:7]), *(int(x) for x in r[7:12]), r[12],
                               None if r[13] is None else float(r[13]), r[14], contained.get(r[0], 0),
                               bool(r[15]), None if r[16] is None else float(r[16]))
    return out


def counts_txn(txn: Txn, vetting_audits: int) -> dict[str, int]:
    """Farmers by standing (the metrics): ok, suspended, disqualified, contained, unvetted."""
    out = {OK: 0, SUSPENDED: 0, OFFLINE: 0, DISQUALIFIED: 0}
    for status, n in txn.execute("SELECT status, COUNT(*) FROM reputation GROUP BY status").fetchall():
        out[str(status)] = int(n)
    # by the contained contracts only (index contracts_contained), never every active contract: the
    # tokens looked up by the ids found (a join lets SQLite, its statistics saying that almost no
    # contract is contained, walk every contract of every token), ``+`` keeps the state out of the
    # index choice (contracts_due would read every active contract)
    out["contained"] = int(txn.scalar(
        "SELECT COUNT(DISTINCT t.address) FROM tokens t WHERE t.id IN "
        "(SELECT token_id FROM contracts WHERE contained > 0 AND +state = 'active')") or 0)
    out["unvetted"] = int(txn.scalar("SELECT COUNT(*) FROM reputation WHERE status = 'ok' AND passes < ?",
                                     (vetting_audits,)) or 0)
    return out


class ReputationStore:
    """Farmer reputation outside the result transactions: the operator's view and commands, the
    reputation job, the metrics, errors reported by the protocols."""

    def __init__(self, db: Database, rules: Rules):
        self.db = db
        self.rules = rules

    def of_addresses(self, addresses: Sequence[str]):
        """Fires with ``{address: Reputation}`` (addresses without a row are left out)."""
        return self.db.run("reputation_of", of_addresses_txn, list(addresses))

    def record_errors(self, token_hash: bytes, errors: int, now: float):
        """Count errors on the side of the farmer of a live token. Fires with its address (None for
        no live token: nothing is counted)."""

        def body(txn: Txn) -> str | None:
            row = txn.execute("SELECT id, address, last_seen FROM tokens WHERE token_hash = ? AND deleted IS NULL",
                              (token_hash,)).fetchone()
            if row is None:
                return None
            if online.should_record(None if row[2] is None else float(row[2]), now, self.rules.online):
                txn.execute("UPDATE tokens SET last_seen = ? WHERE id = ?", (now, row[0]))  # a request too
            record_errors_txn(txn, self.rules, now, str(row[1]), errors)
            return str(row[1])

        return self.db.run("reputation_errors", body)

    def sweep(self, now: float):
        """Fires with a :class:`SweepResult`: see :func:`sweep_txn`."""
        return self.db.run("reputation_sweep", sweep_txn, self.rules, now)

    def reinstate(self, address: str, now: float):
        """Fires with the status before, or None: see :func:`reinstate_txn`."""
        return self.db.run("reputation_reinstate", reinstate_txn, address, now, self.rules)

    def counts(self):
        """Fires with farmers by standing: see :func:`counts_txn`."""
        return self.db.run("reputation_counts", counts_txn, self.rules.vetting_audits)

    def vetting(self):
        """Fires with ``{protocol: (total, unvetted)}`` of the vetting counters."""
        return self.db.run("vetting_counts", lambda txn: {int(p): (float(t), float(u)) for p, t, u in txn.execute(
            "SELECT protocol, total, unvetted FROM vetting").fetchall()})
