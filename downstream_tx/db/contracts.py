"""Contracts (token × file) and the v0 challenge lifecycle.

Timing (docs/protocol-v0.md, Timing): challenge k of a contract is issued at
``start + k*interval``; its deadline is one interval later, when challenge k+1 is issued.
``deadline`` is "the time the timer must next look at this contract", and the timer's query is an
index range scan on ``(state, protocol, deadline)``.

A contract whose challenge was answered is stored *answered ahead* (:data:`AHEAD`): its
``deadline`` moves to the end of the next window, the time by which that window must have been
answered, and the next challenge is taken only when the farmer reads it or answers
(:func:`materialise_txn`, in the request's transaction). So the timer never visits a contract
answered on time; its range holds the windows that ended unanswered (misses, containment,
forgiveness) and the starved ones, and it handles them as the rows it materialises first.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from downstream_tx.db import challenges, counters, late, online, reputation
from downstream_tx.db.database import SHORT_BATCH, Database, Txn
from downstream_tx.db.replicas import FAILED, end_where_txn, finish_txn
from downstream_tx.db.tokens import TOKEN_COLUMNS, TokenRow, UnknownToken, lookup_txn, seen_txn
from downstream_tx.domain import verdicts, vetting
from downstream_tx.domain.rules import Rules
from downstream_tx.domain.verdicts import Due, Verdict, judge_due

V0 = 0


@dataclass(frozen=True)
class Assignment:
    contract_id: int
    file_id: int
    file_hash: str
    size: int
    interval: int
    challenge: bytes
    deadline: float
    #: the contract's download capability (``<contract id>.<key>``, v0/capability.py); set by the
    #: service, which made the key (the database holds only its hash)
    capability: str = ""


def assign_query(urgent_first: bool = True) -> str:
    """The assignment's pick (:func:`assign_txn`; parameters: token id, network, address, token
    id, address). It walks index ``files_urgent`` (most missing first) or ``files_missing`` (fewest
    missing first), ties by oldest id (schema step 13), from the first file below its target and
    stops at the first the farmer may hold: the files at their target are never read."""
    # The checks are scalar subqueries, not [NOT] EXISTS: MariaDB turns an EXISTS into a semi-join
    # and may plan it first (every unused challenge read and sorted), and a NOT EXISTS into a
    # materialised NOT IN; a scalar subquery is evaluated for each file the walk reaches.
    return ("SELECT f.id, f.file_hash, f.size, f.interval_s FROM files f "
            "WHERE f.removed IS NULL AND f.kind = 'stored' AND f.missing > 0 "
            "AND (SELECT c.id FROM contracts c WHERE c.file_id = f.id AND c.state = 'active' "
            "AND (c.token_id = ? OR c.network = ? OR c.token_id IN (SELECT t.id FROM tokens t WHERE t.address = ?)) "
            "LIMIT 1) IS NULL "
            # nor one whose contract this farmer failed (while that contract is kept: db/archive.py)
            "AND (SELECT c.id FROM contracts c WHERE c.file_id = f.id AND c.state = 'failed' "
            "AND (c.token_id = ? OR c.token_id IN (SELECT t.id FROM tokens t WHERE t.address = ?)) LIMIT 1) IS NULL "
            "AND (SELECT ch.id FROM challenges ch WHERE ch.file_id = f.id AND ch.used = 0 LIMIT 1) IS NOT NULL "
            "ORDER BY f.missing " + ("DESC" if urgent_first else "ASC") + ", f.id LIMIT 1")


def assign_txn(txn: Txn, token_id: int, now: float, attempts: int = 5, urgent_first: bool = True,
               download_key: bytes | None = None, address: str | None = None,
               network: str | None = None) -> Assignment | None:
    """Give the token a contract on the stored file furthest below its redundancy target that its
    farmer may hold (ties: oldest file); with ``urgent_first`` false (a farmer not preferred by its
    reputation), the one closest to its target instead. A file's replicas are on distinct farmers
    and networks (domain/placement.py ``may_hold``): not one the token holds, nor (``address``) one
    any token of its payout address holds, nor (``network``, the key of the client's network; None:
    not compared) one held from the same network, nor one whose contract the farmer failed (a
    replica it lost is repaired on another farmer, not handed back to it). The repair path is this
    one: a file whose replica was lost comes back here, under the same rule. The replica slot is
    taken with a guarded update, so concurrent requests never push a file over its target.
    ``download_key``: the SHA-256 of the contract's download key (db/downloads.py)."""
    for _ in range(attempts):
        row = txn.execute(assign_query(urgent_first), (token_id, network, address, token_id, address)).fetchone()
        if row is None:
            return None
        file_id, file_hash, size, interval = row
        if not txn.execute(
            "UPDATE files SET replicas = replicas + 1 WHERE id = ? AND replicas < redundancy", (file_id,)
        ).rowcount:
            continue  # another farmer took the last slot; pick again
        taken = challenges.take_txn(txn, file_id, 1)
        if not taken:
            txn.execute("UPDATE files SET replicas = replicas - 1 WHERE id = ?", (file_id,))
            continue
        challenge_id, seed = taken[0]
        deadline = now + interval
        txn.execute(
            "INSERT INTO contracts (token_id, file_id, protocol, state, start, interval_s, seq, challenge_id, "
            "issued, deadline, answered, download_key, network) VALUES (?, ?, 0, 'active', ?, ?, 0, ?, ?, ?, 0, ?, ?)",
            (token_id, file_id, now, interval, challenge_id, now, deadline, download_key, network),
        )
        contract_id = txn.lastrowid  # read before the counters' UPDATE (MySQL's lastrowid is the last statement's)
        counters.start_txn(txn, V0, token_id, int(size))
        return Assignment(contract_id, file_id, file_hash, int(size), int(interval), seed, deadline)
    return None


@dataclass
class TickResult:
    issued: int = 0
    missed: int = 0
    forgiven: int = 0
    failed: int = 0
    starved: int = 0
    #: missed challenges asked again in containment (not counted as misses)
    contained: int = 0
    more: bool = False
    #: files whose unused challenges were consumed (candidates for a top-up)
    file_ids: set[int] = field(default_factory=set)
    #: ids of the contracts this pass failed (the contract timer logs each with its farmer and file)
    failed_ids: list[int] = field(default_factory=list)

    def add(self, page: TickResult) -> None:
        """Add a page's counts (the pass runs page by page)."""
        self.issued += page.issued
        self.missed += page.missed
        self.forgiven += page.forgiven
        self.failed += page.failed
        self.starved += page.starved
        self.contained += page.contained
        self.file_ids |= page.file_ids
        self.failed_ids += page.failed_ids


#: contracts per issuing UPDATE (its ``CASE id WHEN … THEN challenge`` is evaluated row by row)
ISSUE_BATCH = 500


#: a contract answered ahead: its current challenge answered (pass or fail), ``deadline`` the end of
#: the next window (``seq + 1``), whose challenge is not taken yet (rows written before this form
#: have ``deadline`` at the end of window ``seq``: the timer visits them once, as it always did)
AHEAD = "c.answered = 1 AND c.challenge_id IS NOT NULL AND c.deadline > c.start + (c.seq + 1.5) * c.interval_s"
#: what a read at ``?`` (now) takes a challenge for: a contract answered ahead whose next window
#: has begun, or a starved one (no challenge left when its window was issued) inside its window
PENDING = (f"(({AHEAD} AND c.start + (c.seq + 1) * c.interval_s <= ?) "
           "OR (c.challenge_id IS NULL AND c.deadline > ?))")


def materialise_txn(txn: Txn, ids: Sequence[int], now: float) -> dict[int, bool]:
    """Take the challenge of the window the farmer is in for those of the active v0 contracts
    ``ids`` that are :data:`PENDING` at ``now`` (re-read and locked here: two reads at once take
    one challenge). A contract answered ahead gets window ``seq + 1`` — what the timer's pass
    issued at the window's start before (its answered challenge is not kept as the previous one);
    with no challenge left it is starved in that window. A starved contract gets one for the rest
    of its window (as :func:`fill_starved_txn`). Returns {id: got a challenge} of the contracts
    that were pending."""
    rows = txn.select_in(
        "SELECT c.id, c.file_id, c.start, c.interval_s, c.seq, c.challenge_id FROM contracts c "
        f"WHERE c.id IN {{ids}} AND c.state = 'active' AND c.protocol = 0 AND {PENDING} ORDER BY c.id"
        + txn.for_update(), sorted(set(ids)), after=[now, now])
    if not rows:
        return {}
    by_file: dict[int, list[int]] = defaultdict(list)
    for cid, file_id, *_ in rows:
        by_file[int(file_id)].append(int(cid))
    taken = challenges.take_ids_txn(txn, {f: len(ids) for f, ids in by_file.items()})
    given = {cid: ch for f, ids in by_file.items() for cid, ch in zip(ids, taken.get(f, []))}
    ahead, starved = [], []
    for cid, _, start, interval, seq, challenge_id in rows:
        challenge = given.get(int(cid))
        if challenge_id is None:
            if challenge is not None:
                starved.append((cid, challenge, now, 0))
            continue
        turned = float(start) + (int(seq) + 1) * int(interval)
        # (prev_challenge_id, prev_deadline, prev_missed, challenge_id, answered, issued, seq; guard: seq)
        ahead.append((cid, None, turned, 0, challenge, int(challenge is None), turned, int(seq) + 1, int(seq)))
    txn.update_by_id("contracts", ["prev_challenge_id", "prev_deadline", "prev_missed", "challenge_id", "answered",
                                   "issued", "seq"], ahead,
                     where="state = 'active' AND answered = 1 AND challenge_id IS NOT NULL", match=["seq"])
    txn.update_by_id("contracts", ["challenge_id", "issued", "answered"], starved, where="challenge_id IS NULL")
    txn.count({counters.unanswered(V0): len(given)})
    return {int(r[0]): int(r[0]) in given for r in rows}


def _window(engine_name: str) -> str:
    """``k``, the current window of a due contract at ``?`` (now): ``max(seq + 1, floor((now -
    start) / interval))``, in SQL. ``seq + 1`` keeps the window from going back when rounding puts
    the pass a hair before the deadline. SQLite has no FLOOR; its CAST truncates, which is the same
    wherever it matters (a negative quotient is below ``seq + 1`` either way)."""
    if engine_name == "sqlite":
        return "MAX(seq + 1, CAST((? - start) / interval_s AS INTEGER))"
    return "GREATEST(seq + 1, FLOOR((? - start) / interval_s))"


def _issue_sets(missed: bool, forgiven: bool, clear: bool) -> str:
    """What the issuing UPDATE writes besides the window, for a contract whose miss it counts, that
    it forgives, whose containment it ends: the kept window with its ``prev_missed`` (db/late.py;
    first), the miss counts, ``contained``."""
    sets = late.prev_sets("1" if missed else "0" if forgiven else "prev_missed")
    if missed:
        sets += ", misses = misses + 1, run = run + 1"
    if clear:
        sets += ", contained = 0"
    return sets


def issue_next_txn(txn: Txn, issue: Sequence[tuple[int, int | None]], now: float, answered: set[int],
                   missed: Collection[int] = (), forgiven: Collection[int] = (), clear: Collection[int] = ()) -> int:
    """Issue the challenge of the current window to each ``(contract id, challenge id or None)``:
    ``seq``, ``issued`` and ``deadline`` are computed in SQL from ``start`` and ``interval_s`` (see
    :func:`_window`), so only the two ids travel per contract. ``None``: no challenge was left (the
    contract is starved: nothing outstanding, no miss next time). The contracts are active and
    locked by the caller; ``answered``: those of them whose ``answered`` is 1 now (the unanswered
    counter follows the change). The same UPDATE counts the miss of those in ``missed`` (``misses``
    and ``run`` + 1, ``prev_missed`` = 1), forgives those in ``forgiven`` (``prev_missed`` = 0) and
    ends the containment of those in ``clear``: one write per contract. Returns rows changed."""
    k = _window(txn.engine_name)
    # MariaDB assigns left to right (a later expression sees an earlier column's new value), SQLite
    # all at once: every expression reads only columns that are assigned after it, or not at all
    # (the kept window first: it reads challenge_id, answered and deadline before they change)
    sets = f"issued = start + {k} * interval_s, deadline = start + ({k} + 1) * interval_s, seq = {k}"
    txn.count({counters.unanswered(V0): sum(cid in answered for cid, ch in issue if ch is not None)
               - sum(cid not in answered for cid, ch in issue if ch is None)})
    groups: dict[tuple[bool, bool, bool, bool], list[tuple[int, int | None]]] = defaultdict(list)
    for cid, ch in issue:
        groups[(ch is None, cid in missed, cid in forgiven, cid in clear)].append((cid, ch))
    changed = 0
    for (starved, *marks), part in sorted(groups.items()):
        prev = _issue_sets(*marks)
        if starved:
            changed += txn.update_in(f"UPDATE contracts SET {prev}, challenge_id = NULL, answered = 1, {sets} "
                                     "WHERE id IN {ids} AND state = 'active'", [cid for cid, _ in part],
                                     before=[now] * 3)
        elif txn.engine_name != "sqlite":
            # a server: one statement per ISSUE_BATCH contracts (a CASE, not MariaDB's VALUES table
            # or a UNION ALL of one-row SELECTs: the first is not MySQL 8 syntax, the second costs a
            # query block per row to parse and plan)
            for first in range(0, len(part), ISSUE_BATCH):
                batch = part[first:first + ISSUE_BATCH]
                ids = [cid for cid, _ in batch]
                case = "CASE id" + " WHEN ? THEN ?" * len(batch) + " END"
                changed += txn.execute(
                    f"UPDATE contracts SET {prev}, challenge_id = {case}, answered = 0, {sets} "
                    f"WHERE id IN {txn.in_list(ids)} AND state = 'active'",
                    [v for pair in batch for v in pair] + [now] * 3 + ids,
                ).rowcount
        else:  # in-process SQLite: one cheap statement per row
            txn.executemany(f"UPDATE contracts SET {prev}, challenge_id = ?, answered = 0, {sets} "
                            "WHERE id = ? AND state = 'active'", [(ch, now, now, now, cid) for cid, ch in part])
            changed += txn.rowcount
    return changed


class _DueRow(NamedTuple):
    """A contract of the pass's page: :class:`~downstream_tx.domain.verdicts.Due` (the first six),
    then what the pass's other rules need, read with it (not read again: one read per contract)."""

    id: int
    file_id: int
    run: int
    deadline: float
    interval: int
    outstanding: int
    answered: int
    #: answered ahead (:data:`AHEAD`)
    ahead: int
    token_id: int
    contained: int
    start: float
    seq: int


def update_due_txn(
    txn: Txn,
    rules: Rules,
    now: float,
    max_failures: int,
    limit: int = 5000,
    forgive: tuple[float, float] | None = None,
    judge: Callable[[Due, int, tuple[float, float] | None], Verdict] = judge_due,
) -> TickResult:
    """One page of the periodic v0 pass: up to ``limit`` contracts whose deadline has come, oldest
    deadline first; the missed challenges the domain asks again first (containment, by ``rules``),
    the others judged by ``judge`` (:func:`~downstream_tx.domain.verdicts.judge_due`): misses
    counted, failed contracts ended (their slot freed), the others issued the challenge of their
    current window.

    Each contract is read once (the page's locked SELECT carries what containment, the offline
    check and the reputation hook need; the farmers of the unanswered ones are read once more, by
    token) and, unless it fails, written once (its miss counts in the issuing UPDATE).

    The rows are locked (``FOR UPDATE``; SQLite serialises writers), so a second runner of the same
    pass re-reads them after this commit, finds them no longer due, and changes nothing; a page
    that is retried (rolled back, or committed and run again) likewise changes nothing twice.
    """
    # only the columns the rules need (PyMySQL decodes every value in Python), ``answered`` (counters)
    # and whether it is answered ahead
    rows = [_DueRow(*row) for row in txn.execute(
        "SELECT c.id, c.file_id, c.run, c.deadline, c.interval_s, "
        "CASE WHEN c.challenge_id IS NOT NULL AND c.answered = 0 THEN 1 ELSE 0 END, c.answered, "
        f"CASE WHEN {AHEAD} THEN 1 ELSE 0 END, c.token_id, c.contained, c.start, c.seq FROM contracts c "
        "WHERE c.state = 'active' AND c.protocol = 0 AND c.deadline <= ? ORDER BY c.deadline LIMIT ?"
        + txn.for_update(), (now, limit),
    ).fetchall()]
    result = TickResult(more=len(rows) == limit)
    # answered ahead and past the next window's deadline: that window was never read. It is taken
    # now, as the pass issued it at the window's start before, and judged as such (a miss, unless
    # its file had no challenge left: starved, nothing outstanding)
    got = materialise_txn(txn, [r.id for r in rows if r.ahead], now)
    rows = [r._replace(outstanding=int(got[r.id]), answered=int(not got[r.id]), seq=r.seq + 1) if r.id in got
            else r for r in rows]
    # the farmers of the unanswered challenges, by token (db/online.py)
    unanswered = [r for r in rows if r.outstanding]
    farmers = online.farmers_of_tokens_txn(txn, {r.token_id for r in unanswered})
    farmer_rows = [(r.id, farmers[r.token_id], int(r.contained or 0)) for r in unanswered if r.token_id in farmers]
    # a farmer that made no request in an unanswered challenge's window was offline: no
    # containment, and the contract's miss is not an audit failure (its online windows count it)
    offline = online.offline_among(rules.online, [(r.id, r.deadline, r.interval) for r in unanswered],
                                   {cid: farmer for cid, farmer, _ in farmer_rows})
    # containment first, on this page: missed challenges asked again are left alone (reputation hook)
    contained = reputation.contain_v0_txn(
        txn, rules, now, forgive,
        [(r.id, r.start, r.interval, r.seq, r.deadline, r.contained) for r in unanswered if r.id not in offline],
        farmer_rows)
    result.contained = len(contained)
    rows = [r for r in rows if r.id not in contained]
    answered = {r.id for r in rows if r.answered}
    failed: list[tuple[int, int]] = []  # (id, file_id)
    missed: list[int] = []  # ids whose misses and run go up by one (failed ones too)
    forgiven: list[int] = []
    next_by_file: dict[int, list[int]] = defaultdict(list)
    for row in rows:
        due = Due(*row[:6])
        verdict = judge(due, max_failures, forgive)
        result.forgiven += verdict.forgiven
        if verdict.forgiven:
            forgiven.append(due.id)
        if verdict.missed:
            missed.append(due.id)
        if verdict.failed:
            failed.append((due.id, due.file_id))
        else:
            next_by_file[due.file_id].append(due.id)
    result.missed = len(missed)
    # the misses in the farmers' tallies, but for those of farmers that were offline; a counted miss
    # ends the contract's containment, and so does one of a farmer that went offline (the miss
    # counts for the contract, not as an audit failure): ``contained`` = 0 in the row's UPDATE
    # (only where it is > 0: SQLite rewrites the index entries of every column an UPDATE sets)
    ended = reputation.record_farmers_txn(txn, rules, now, farmer_rows,
                                          misses=[cid for cid in missed if cid not in offline], clear=False)
    counted = set(missed)
    clear = set(ended) | {r.id for r in rows if r.contained and r.id in offline and r.id in counted}
    if failed:
        # a failed contract is not issued: its miss counts (prev_missed: db/late.py) before it ends
        ids = {cid for cid, _ in failed}
        txn.update_in("UPDATE contracts SET misses = misses + 1, run = run + 1, prev_missed = 1 "
                      "WHERE id IN {ids} AND state = 'active'", [cid for cid in missed if cid in ids])
        txn.update_in("UPDATE contracts SET contained = 0 WHERE id IN {ids} AND contained > 0",
                      sorted(cid for cid in clear if cid in ids))
        txn.update_in("UPDATE contracts SET prev_missed = 0 WHERE id IN {ids}", [c for c in forgiven if c in ids])
        finish_txn(txn, failed, now, "failed", FAILED)
        result.failed = len(failed)
        result.failed_ids = [cid for cid, _ in failed]
    taken_by_file = challenges.take_ids_txn(txn, {f: len(ids) for f, ids in next_by_file.items()})
    issue: list[tuple[int, int | None]] = []
    for file_id, ids in next_by_file.items():
        taken = taken_by_file.get(file_id, [])
        result.file_ids.add(file_id)
        result.issued += min(len(ids), len(taken))
        result.starved += max(0, len(ids) - len(taken))
        issue += zip(ids, taken + [None] * (len(ids) - len(taken)))
    issue.sort()  # in primary key order: neighbouring rows share pages (and InnoDB reads ahead)
    issue_next_txn(txn, issue, now, answered, counted, set(forgiven), clear)
    return result


def fill_starved_txn(txn: Txn, now: float, limit: int = 5000) -> int:
    """Give contracts left without a challenge (their file had none unused) one now, for the rest
    of their current window. Returns how many were issued."""
    rows = txn.execute(
        "SELECT id, file_id, answered FROM contracts WHERE state = 'active' AND protocol = 0 "
        "AND challenge_id IS NULL AND deadline > ? ORDER BY id LIMIT ?" + txn.for_update(),
        (now, limit),
    ).fetchall()
    by_file: dict[int, list[int]] = defaultdict(list)
    for cid, file_id, _ in rows:
        by_file[file_id].append(cid)
    updates = []
    taken = challenges.take_ids_txn(txn, {f: len(ids) for f, ids in by_file.items()})
    for file_id, ids in by_file.items():
        for cid, challenge_id in zip(ids, taken.get(file_id, [])):
            updates.append((cid, challenge_id, now, 0))
    answered = {cid for cid, _, a in rows if a}
    txn.count({counters.unanswered(V0): sum(cid in answered for cid, *_ in updates)})
    return txn.update_by_id("contracts", ["challenge_id", "issued", "answered"], updates,
                            where="challenge_id IS NULL")


class _ShareUsed(Exception):
    """The vetting share is used up: the assignment is rolled back."""

    def __init__(self, row):
        super().__init__("vetting share used up")
        self.row = row


@dataclass(frozen=True)
class AnswerResult:
    status: str  # pass | fail | no_hash | not_due
    failed_contract: bool = False
    #: a pass that arrived after its challenge's deadline, within ``late_grace`` (domain/verdicts.py)
    late: bool = False


#: the columns of a contract :func:`answer_txn` checks an answer against (with its previous
#: challenge: db/late.py)
ANSWER_COLUMNS = ("c.id, c.file_id, c.challenge_id, c.answered, c.issued, c.deadline, c.run, ch.answer, "
                  "c.prev_challenge_id, c.prev_deadline, c.prev_missed, pch.answer, c.contained")
PREVIOUS_JOIN = "LEFT JOIN challenges pch ON pch.id = c.prev_challenge_id"
_UNREAD = object()


def _answer_row_txn(txn: Txn, token_id: int, file_hash: str, now: float) -> tuple | None:
    """The token's active v0 contract on ``file_hash`` as :data:`ANSWER_COLUMNS` and whether it is
    :data:`PENDING` at ``now``, locked (None: none)."""
    return txn.execute(
        f"SELECT {ANSWER_COLUMNS}, CASE WHEN {PENDING} THEN 1 ELSE 0 END "
        "FROM contracts c JOIN files f ON f.id = c.file_id LEFT JOIN challenges ch ON ch.id = c.challenge_id "
        f"{PREVIOUS_JOIN} WHERE c.token_id = ? AND f.file_hash = ? AND f.removed IS NULL AND c.state = 'active' "
        "AND c.protocol = 0" + txn.for_update(),
        (now, now, token_id, file_hash),
    ).fetchone()


def answer_txn(txn: Txn, rules: Rules, token_id: int, file_hash: str, response: str, now: float,
               max_failures: int, arrived: float | None = None, grace: float = 0.0,
               row: tuple | None | object = _UNREAD) -> AnswerResult:
    """Check a v0 answer (one attempt per challenge) that arrived at ``arrived`` (default ``now``)
    against the contract's current and previous challenge: see :func:`downstream_tx.domain.verdicts.judge`;
    the verdict is recorded in the farmer's reputation in the same transaction
    (:func:`downstream_tx.db.late.reputation_txn`). A contract whose window the farmer has not read
    yet gets its challenge first (:func:`materialise_txn`): the answer is judged against the window
    it is in, as when the timer issued every window at its start.
    ``row``: the contract's :data:`ANSWER_COLUMNS` and its :data:`PENDING` flag (None: no such
    contract) when the caller read them already (:func:`answer_by_token_txn`)."""
    if row is _UNREAD:
        row = _answer_row_txn(txn, token_id, file_hash, now)
    if row is None:
        return AnswerResult("no_hash")
    if row[-1]:
        materialise_txn(txn, [row[0]], now)
        row = _answer_row_txn(txn, token_id, file_hash, now)
        assert row is not None  # (locked)
    cid, file_id, challenge_id, answered, issued, deadline, run, expected, prev_id, prev_deadline, prev_missed, \
        prev_expected, contained, _ = row
    contract = verdicts.AnswerRow(cid, challenge_id, bool(answered), issued, deadline, run, expected, prev_id,
                                  prev_deadline, bool(prev_missed), prev_expected, int(contained or 0))
    verdict = verdicts.judge(contract, response, now if arrived is None else arrived, grace, max_failures)
    if verdict.status == verdicts.NOT_DUE:
        return AnswerResult("not_due")
    late.record_txn(txn, contract, verdict)
    late.reputation_txn(txn, rules, now, token_id, contract, verdict)
    if verdict.failed:
        finish_txn(txn, [(cid, file_id)], now, "failed", FAILED)
        return AnswerResult("fail", failed_contract=True)
    return AnswerResult(verdict.status, late=verdict.late)


@functools.cache  # (built once per engine's locking clause: it runs for every answer)
def answer_by_token_sql(for_update: str = "") -> str:
    """The token by its hash and its active v0 contract on a file hash (parameters: ``now, now,
    file_hash, token_hash``). The contract is reached from the file — the live files of the hash
    (files_hash), then their active contracts (contracts_file: the file's redundancy, a few rows)
    and the token's among them — never from the token's contracts_token list, which is every active
    contract of the farmer (1,000 rows read per answer for a farmer of 1,000 contracts).
    The subquery finds the contract's id (``fc.token_id + 0`` keeps both engines off contracts_token)
    and the row is read by its primary key: a parenthesised ``LEFT JOIN (files JOIN contracts)``
    made SQLite materialise the join from contracts_due (every active contract). More than one
    live file of the hash is tolerated as before: the first contract found (``LIMIT 1``). On MariaDB
    the subquery's read is not a locking one: the contract's state is checked again on the row
    read (and locked) by its id."""
    columns = ", ".join("k." + c for c in TOKEN_COLUMNS.split(", "))
    return (f"SELECT {columns}, {ANSWER_COLUMNS}, CASE WHEN {PENDING} THEN 1 ELSE 0 END FROM tokens k "
            "LEFT JOIN contracts c ON c.id = (SELECT fc.id FROM files f JOIN contracts fc ON fc.file_id = f.id "
            "AND fc.state = 'active' AND fc.protocol = 0 AND fc.token_id + 0 = k.id "
            "WHERE f.file_hash = ? AND f.removed IS NULL LIMIT 1) AND c.state = 'active' AND c.protocol = 0 "
            f"LEFT JOIN challenges ch ON ch.id = c.challenge_id {PREVIOUS_JOIN} "
            "WHERE k.token_hash = ? AND k.deleted IS NULL" + for_update)


def answer_by_token_txn(txn: Txn, rules: Rules, token_hash: bytes, file_hash: str, response: str, now: float,
                        max_failures: int, arrived: float | None = None,
                        grace: float = 0.0) -> tuple[TokenRow, AnswerResult]:
    """:func:`answer_txn` for a token given by its hash: the token and the contract are read in one
    statement (on MariaDB one round trip fewer per answer). Unknown token: :class:`UnknownToken`."""
    joined = txn.execute(answer_by_token_sql(txn.for_update()), (now, now, file_hash, token_hash)).fetchone()
    if joined is None:
        raise UnknownToken()
    width = len(TOKEN_COLUMNS.split(", "))
    token = seen_txn(txn, TokenRow(*joined[:width]), now, rules.online)
    contract = None if joined[width] is None else tuple(joined[width:])
    return token, answer_txn(txn, rules, token.id, file_hash, response, now, max_failures, arrived, grace,
                             row=contract)


def token_contracts_txn(txn: Txn, token_id: int, limit: int | None = None, offset: int = 0,
                        protocol: int = V0, now: float | None = None) -> list[dict]:
    """A token's active contracts (oldest first; a page of ``limit`` from ``offset``, None: all)
    with their outstanding challenge (v0 /due). With ``now``, the page's contracts whose window
    the farmer reads for the first time get its challenge first (:func:`materialise_txn`;
    ``taken``: this read took one, or found none left)."""
    pending = f"CASE WHEN {PENDING} THEN 1 ELSE 0 END" if now is not None else "0"
    sql = (f"SELECT f.file_hash, ch.seed, c.deadline, c.answered, c.challenge_id, c.id, c.file_id, {pending} "
           "FROM contracts c JOIN files f ON f.id = c.file_id LEFT JOIN challenges ch ON ch.id = c.challenge_id "
           "WHERE c.token_id = ? AND c.state = 'active' AND c.protocol = ? ORDER BY c.id")
    args: tuple = ((now, now) if now is not None else ()) + (token_id, protocol)
    if limit is not None:
        sql += " LIMIT ? OFFSET ?"
        args += (limit, offset)
    rows = txn.execute(sql, args).fetchall()
    taken: dict[int, bool] = {}
    if any(r[7] for r in rows) and protocol == V0:
        taken = materialise_txn(txn, [r[5] for r in rows if r[7]], now)
        rows = txn.execute(sql, args).fetchall()
    return [
        {"file_hash": h, "challenge": None if seed is None else bytes(seed), "deadline": d,
         "answered": bool(a), "challenge_id": cid, "file_id": file_id, "taken": int(i) in taken}
        for h, seed, d, a, cid, i, file_id, _ in rows
    ]


def end_one_txn(txn: Txn, token_id: int, file_hash: str, now: float, reason: str = "removed") -> bool:
    """End a token's active contract on a file (v0 /remove). False if there is none."""
    return end_where_txn(
        txn, "token_id = ? AND file_id IN (SELECT id FROM files WHERE file_hash = ?)",
        (token_id, file_hash), now, reason,
    ) > 0


class ContractStore:
    """The v0 contracts: each farmer call is one transaction that first looks the token up."""

    def __init__(self, db: Database, rules: Rules):
        self.db = db
        #: the node's reputation settings
        self.rules = rules

    def _with_token(self, desc: str, func, token_hash: bytes, *args, short: bool = False, now: float | None = None):
        online_rules = self.rules.online

        def body(txn: Txn):
            row = lookup_txn(txn, token_hash, now, online_rules)
            return row, func(txn, row.id, *args)

        return (self.db.run_short if short else self.db.run)(desc, body)

    def assign(self, token_hash: bytes, now: float, download_key: bytes | None = None, network: str | None = None):
        """Fires with ``(token row, Assignment or None)``: see :func:`assign_txn`. A farmer that may
        get no new contracts is refused first (:class:`~downstream_tx.domain.vetting.NotEligible`);
        one not vetted yet gets its contract only within the vetting share (else None)."""
        rules = self.rules

        def body(txn: Txn):
            row = lookup_txn(txn, token_hash, now, rules.online)
            preferred = reputation.eligible_txn(txn, rules, row.address, now)
            # the files in most danger go to preferred farmers first; the others get the least urgent
            # (a preferred farmer's question is answered without the query)
            urgent_first = vetting.urgent_first(preferred,
                                                preferred or reputation.anyone_vetted_txn(txn, rules, now))
            assignment = assign_txn(txn, row.id, now, urgent_first=urgent_first, download_key=download_key,
                                    address=row.address, network=network)
            if assignment is not None and not reputation.take_share_txn(txn, rules, V0, preferred, now):
                raise _ShareUsed(row)  # roll the assignment back
            return row, assignment

        def refused(failure):
            failure.trap(_ShareUsed)
            return failure.value.row, None

        return self.db.run("get_chunk", body).addErrback(refused)

    def of_token(self, token_hash: bytes, limit: int | None = None, offset: int = 0, now: float | None = None):
        """Fires with ``(token row, a page of its active contracts)``: see :func:`token_contracts_txn`
        (``now``: the farmer's request, its last_seen; the windows it reads first are taken then)."""
        # short only for a small page: a page's first read of a window takes its challenges (a write
        # per contract), which must not hold the reactor for a farmer's 1,000 contracts
        return self._with_token("due", token_contracts_txn, token_hash, limit, offset, V0, now,
                                short=limit is not None and limit <= SHORT_BATCH, now=now)

    def answer(self, token_hash: bytes, file_hash: str, response: str, now: float, max_failures: int,
               arrived: float | None = None, grace: float = 0.0):
        """Fires with ``(token row, AnswerResult)``: see :func:`answer_by_token_txn`."""
        return self.db.run_short("answer", answer_by_token_txn, self.rules, token_hash, file_hash, response, now,
                                 max_failures, arrived, grace)

    def end(self, token_hash: bytes, file_hash: str, now: float):
        """End the token's active contract on a file (v0 /remove). Fires with ``(token row, ended?)``.
        Ending a contract in containment counts its outstanding challenge as a miss (no escape)."""
        rules = self.rules

        def body(txn: Txn, token_id: int) -> bool:
            contained = [int(r[0]) for r in txn.execute(
                "SELECT c.id FROM contracts c JOIN files f ON f.id = c.file_id WHERE c.token_id = ? "
                "AND f.file_hash = ? AND c.state = 'active' AND c.contained > 0", (token_id, file_hash)).fetchall()]
            reputation.record_contracts_txn(txn, rules, now, misses=contained)
            return end_one_txn(txn, token_id, file_hash, now)

        return self._with_token("end_contract", body, token_hash, short=True, now=now)

    def issue_due(self, now: float, max_failures: int, limit: int, forgive: tuple[float, float] | None):
        """One page of the v0 timer pass: see :func:`update_due_txn`."""
        return self.db.run("update_challenges", update_due_txn, self.rules, now, max_failures, limit, forgive)

    def fill_starved(self, now: float):
        """Fires with the contracts that got a challenge: see :func:`fill_starved_txn`."""
        return self.db.run("fill_starved", fill_starved_txn, now)

    def latest(self, token_hash: bytes, file_hash: str):
        """Fires with the newest contract of a token on a file as a dict, or None (admin and tests)."""
        keys = ("id", "protocol", "state", "passes", "fails", "misses", "run", "seq", "deadline", "answered",
                "end_reason")

        def body(txn: Txn) -> dict | None:
            row = txn.execute(
                "SELECT c.id, c.protocol, c.state, c.passes, c.fails, c.misses, c.run, c.seq, c.deadline, "
                "c.answered, c.end_reason FROM contracts c JOIN tokens k ON k.id = c.token_id "
                "JOIN files f ON f.id = c.file_id WHERE k.token_hash = ? AND f.file_hash = ? "
                "ORDER BY c.id DESC LIMIT 1", (token_hash, file_hash)).fetchone()
            return None if row is None else dict(zip(keys, row))

        return self.db.run("contract_latest", body)

    def all(self):
        """Fires with every contract (any token, any state) as a dict, oldest first (small databases:
        admin and tests)."""
        keys = ("id", "protocol", "state", "file_hash", "challenge_id", "deadline", "passes", "fails", "misses",
                "end_reason")

        def body(txn: Txn) -> list[dict]:
            return [dict(zip(keys, row)) for row in txn.execute(
                "SELECT c.id, c.protocol, c.state, f.file_hash, c.challenge_id, c.deadline, c.passes, c.fails, "
                "c.misses, c.end_reason FROM contracts c JOIN files f ON f.id = c.file_id ORDER BY c.id").fetchall()]

        return self.db.run("contracts_all", body)
