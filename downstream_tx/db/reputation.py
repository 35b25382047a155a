"""Farmer reputation (docs/operations.md, "Reputation"): scores, containment, suspension,
disqualification and the vetting share.

A *farmer* is a payout address: every token of an address shares one ``reputation`` row, so a new
token for the same address starts where the old one stands (it cannot escape containment or a
disqualification).

Scores are beta reputations with forgetting (Storj's audit score): each result updates
``alpha ← λ·alpha + w·s`` and ``beta ← λ·beta + w·(1 - s)`` with ``s`` = 1 for a success, 0 for a
failure, ``λ`` = 0.999 and weight ``w`` = 1; the score is ``alpha / (alpha + beta)``. A new farmer
starts at ``alpha = 1 / (1 - λ) = 1000``, ``beta = 0``: the steady state of a farmer that has always
passed (with ``alpha = 1`` a single early failure would put it at 0.5, far below any sensible
threshold). Three scores:

- audit: passes succeed; fails and *counted* misses (after containment) fail;
- online: answers (pass or fail) succeed; every missed deadline fails, re-asks in containment too;
- unknown (suspension): answers succeed; malformed requests and errors on the farmer's side fail.

The results one transaction records for a farmer are applied in a fixed order, successes first,
then failures, which the closed form :func:`coefficients` computes exactly; so the update is one
linear ``UPDATE`` per farmer (no read-modify-write), and the status changes it causes are decided
in the same statement from the same values.
"""

from __future__ import annotations

import functools
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from downstream_tx.db.database import Database, Txn
from downstream_tx.db.replicas import FAILED, end_where_txn

#: the forgetting factor and the weight of one result
LAMBDA = 0.999
WEIGHT = 1.0
#: a new farmer's alpha: 1 / (1 - λ), the steady state of one that always passes
INITIAL_ALPHA = 1000.0

OK, SUSPENDED, DISQUALIFIED = "ok", "suspended", "disqualified"
#: the vetting counters are halved once this many assignments were counted, so the share is over
#: the recent assignments (a burst after a long time cannot use up a share of everything ever)
VETTING_WINDOW = 10_000.0


@dataclass(frozen=True)
class Rules:
    """The reputation settings (built from the configuration by ``core.reputation``)."""

    dq_threshold: float = 0.96
    suspension_threshold: float = 0.6
    suspension_grace: float = 7 * 86400.0
    containment_retries: int = 3
    vetting_audits: int = 100
    vetting_share: float = 0.05
    lam: float = LAMBDA


DEFAULT_RULES = Rules()
#: the default of the timer passes' transaction functions when called alone (tests, tools): no
#: containment, so they keep their plain miss rule unless a store passes the node's rules
UNCONTAINED = Rules(containment_retries=0)


@dataclass
class Tally:
    """Results of one farmer within one transaction."""

    passes: int = 0
    fails: int = 0
    misses: int = 0  # counted misses (after containment)
    retries: int = 0  # missed deadlines asked again in containment (not counted as misses)
    errors: int = 0  # malformed requests, errors on the farmer's side

    def __bool__(self) -> bool:
        return bool(self.passes or self.fails or self.misses or self.retries or self.errors)


# --- the math ---------------------------------------------------------------------------------

def update(alpha: float, beta: float, success: bool, lam: float = LAMBDA,
           weight: float = WEIGHT) -> tuple[float, float]:
    """One result, applied as written (the reference the closed form is tested against)."""
    return lam * alpha + weight * success, lam * beta + weight * (not success)


@functools.lru_cache(maxsize=4096)
def coefficients(successes: int, failures: int, lam: float = LAMBDA) -> tuple[float, float, float]:
    """``(scale, alpha_add, beta_add)`` such that ``successes`` successes then ``failures``
    failures (weight 1) turn ``(alpha, beta)`` into ``(scale·alpha + alpha_add, scale·beta +
    beta_add)``: ``scale = λ^(k+m)``, ``alpha_add = λ^m·(1 - λ^k)/(1 - λ)``, ``beta_add = (1 - λ^m)/(1 - λ)``."""
    k, m = successes, failures
    geometric = (lambda n: float(n)) if lam == 1 else (lambda n: (1 - lam ** n) / (1 - lam))
    return lam ** (k + m), lam ** m * geometric(k), geometric(m)


def score(alpha: float, beta: float) -> float:
    return alpha / (alpha + beta) if alpha + beta > 0 else 1.0


def dimensions(t: Tally) -> dict[str, tuple[int, int]]:
    """(successes, failures) of each score for a tally."""
    answered = t.passes + t.fails
    return {"audit": (t.passes, t.fails + t.misses), "online": (answered, t.misses + t.retries),
            "unknown": (answered, t.errors)}


# --- recording --------------------------------------------------------------------------------

def ensure_txn(txn: Txn, addresses: Iterable[str]) -> None:
    """A reputation row (fresh scores) for each address that has none."""
    verb = "INSERT OR IGNORE" if txn.engine_name == "sqlite" else "INSERT IGNORE"
    txn.executemany(f"{verb} INTO reputation (address) VALUES (?)", [(a,) for a in sorted(set(addresses))])


def _linear(column: str, name: str) -> tuple[str, list[str]]:
    """``column * scale + add`` with the names of its two values."""
    return f"({column} * ? + ?)", [f"{name}_scale", f"{name}_{column.rsplit('_', 1)[1]}"]


def _below(a: tuple[str, list], b: tuple[str, list], threshold: str, negate: bool = False) -> tuple[str, list]:
    """``a / (a + b) < threshold`` (``>=`` with ``negate``) without a division."""
    op = ">=" if negate else "<"
    return f"{a[0]} {op} ? * ({a[0]} + {b[0]})", [*a[1], threshold, *a[1], *b[1]]


@dataclass(frozen=True)
class StandingChange:
    """A farmer's status changed (noted on the transaction, announced once it commits)."""

    address: str
    before: str
    after: str
    reason: str | None


@dataclass(frozen=True)
class ContainmentChange:
    """Contracts of one farmer entered containment (``entered``: their missed challenge is asked
    again for the first time) or left it (``left``: contract id → ``pass``, ``fail`` or ``miss``, the
    result that ended it)."""

    address: str
    protocol: int | None = None
    entered: tuple[int, ...] = ()
    left: tuple[tuple[int, str], ...] = ()
    retries: int = 0


def _record(txn: Txn, rules: Rules, now: float, tally: Tally, where: str, arg: Any) -> bool:
    """Apply one farmer's tally (the farmer: ``WHERE <where>`` with ``arg``); False when it has no
    reputation row yet. A change of status is noted on the transaction (:class:`StandingChange`).

    Only audit failures and errors can disqualify or suspend, and only answers can lift a suspension:
    a tally without failures or errors on a farmer that is not suspended — nearly every one — is the
    one statement it always was; the others read the status before and after."""
    audit_failures = tally.fails + tally.misses
    if not audit_failures and not tally.errors:
        sql, args = _statement(rules, now, tally, f"{where} AND status <> '{SUSPENDED}'", recover=False)
        if txn.execute(sql, [*args, arg]).rowcount:
            return True
    row = txn.execute(f"SELECT address, status FROM reputation WHERE {where}" + txn.for_update(), (arg,)).fetchone()
    if row is None:
        return False
    sql, args = _statement(rules, now, tally, "address = ?")
    txn.execute(sql, [*args, row[0]])
    status, reason = txn.execute("SELECT status, status_reason FROM reputation WHERE address = ?",
                                 (row[0],)).fetchone()
    if status != row[1]:
        txn.note(StandingChange(str(row[0]), str(row[1]), str(status), reason))
    return True


def record_token_txn(txn: Txn, rules: Rules, now: float, token_id: int, tally: Tally) -> None:
    """Record one token's results (the v0 answer: the farmer found by a subquery); the caller ends
    the contract's containment itself."""
    where = "address = (SELECT address FROM tokens WHERE id = ?)"
    if not _record(txn, rules, now, tally, where, token_id):  # no reputation row yet
        ensure_txn(txn, [txn.scalar("SELECT address FROM tokens WHERE id = ?", (token_id,))])
        _record(txn, rules, now, tally, where, token_id)


def record_txn(txn: Txn, rules: Rules, now: float, tallies: Mapping[str, Tally]) -> None:
    """Apply each farmer's results: its scores, counts and, decided in the same statement from the
    new scores, its status (ok → suspended below ``suspension_threshold`` of the unknown score,
    suspended → ok at or above it again, ok or suspended → disqualified below ``dq_threshold`` of
    the audit score). Farmers in address order (one lock order for every transaction)."""
    for address in sorted(tallies):
        if tallies[address]:
            _record(txn, rules, now, tallies[address], "address = ?", address)


COUNTS = ("passes", "fails", "misses", "retries", "errors")


def _statement(rules: Rules, now: float, t: Tally, where: str, recover: bool = True) -> tuple[str, list[Any]]:
    """The UPDATE for a tally and its values (the ``where`` value to add last). Only what the tally
    can change is in it: a score without results, a count of 0 and a status change the results
    cannot cause (no audit failure: no disqualification; no error: no suspension; no answer, or
    ``recover`` false: no recovery) are left out."""
    dims = dimensions(t)
    changing = tuple(name for name, (s, f) in dims.items() if s or f)
    counts = tuple(c for c in COUNTS if getattr(t, c))
    sql, names = _update_statement(where, dims["audit"][1] > 0, t.errors > 0, recover and dims["unknown"][0] > 0,
                                   changing, counts)
    values: dict[str, Any] = {"now": now, "dq": rules.dq_threshold, "st": rules.suspension_threshold,
                              "why_dq": f"audit score below {rules.dq_threshold:g}",
                              "why_suspended": f"unknown-error score below {rules.suspension_threshold:g}"}
    for c in counts:
        values[c] = getattr(t, c)
    for name in changing:
        values[f"{name}_scale"], values[f"{name}_alpha"], values[f"{name}_beta"] = coefficients(*dims[name], rules.lam)
    return sql, [values[n] for n in names]


@functools.cache
def _update_statement(where: str, dq_possible: bool, suspend_possible: bool, recover_possible: bool,
                      changing: tuple[str, ...], counts: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
    """One UPDATE of a farmer's row (``WHERE <where>``) and the names of its values in order; built
    once per shape."""
    a_new, b_new = _linear("audit_alpha", "audit"), _linear("audit_beta", "audit")
    ua_new, ub_new = _linear("unknown_alpha", "unknown"), _linear("unknown_beta", "unknown")
    dq_sql, dq_args = _below(a_new, b_new, "dq")
    low_sql, low_args = _below(ua_new, ub_new, "st")
    high_sql, high_args = _below(ua_new, ub_new, "st", negate=True)
    clauses = []  # (condition, its value names, new status, reason value name or None)
    if dq_possible:
        clauses.append((f"(status <> '{DISQUALIFIED}' AND {dq_sql})", dq_args, DISQUALIFIED, "why_dq"))
    if suspend_possible:
        clauses.append((f"(status = '{OK}' AND {low_sql})", low_args, SUSPENDED, "why_suspended"))
    if recover_possible:
        clauses.append((f"(status = '{SUSPENDED}' AND {high_sql})", high_args, OK, None))
    # MySQL assigns left to right and later expressions see earlier assignments: the status
    # columns come first (they read the old status and scores), the scores last
    sets: list[str] = []
    names: list[str] = []

    def assign(sql: str, *parts: Any) -> None:
        sets.append(sql)
        for part in parts:
            names.extend(part if isinstance(part, list) else [part])

    if clauses:
        assign(f"status_since = CASE WHEN {' OR '.join(c for c, *_ in clauses)} THEN ? ELSE status_since END",
               *[a for _, a, *_ in clauses], "now")
        whens = "".join(f" WHEN {c} THEN " + ("?" if why else "NULL") for c, _, _, why in clauses)
        assign(f"status_reason = CASE{whens} ELSE status_reason END",
               *[part for _, a, _, why in clauses for part in ([a, why] if why else [a])])
        if dq_possible:
            assign(f"pending_end = CASE WHEN {clauses[0][0]} THEN 1 ELSE pending_end END", clauses[0][1])
        whens = "".join(f" WHEN {c} THEN '{status}'" for c, _, status, _ in clauses)
        assign(f"status = CASE{whens} ELSE status END", *[a for _, a, *_ in clauses])
    for name in changing:
        assign(f"{name}_alpha = {name}_alpha * ? + ?", f"{name}_scale", f"{name}_alpha")
        assign(f"{name}_beta = {name}_beta * ? + ?", f"{name}_scale", f"{name}_beta")
    for column in counts:
        assign(f"{column} = {column} + ?", column)
    assign("updated = ?", "now")
    return f"UPDATE reputation SET {', '.join(sets)} WHERE {where}", tuple(names)


def record_contracts_txn(txn: Txn, rules: Rules, now: float, passes: Sequence[int] = (), fails: Sequence[int] = (),
                         misses: Sequence[int] = (), retries: Sequence[int] = (), token_id: int | None = None) -> None:
    """Record challenge results by contract id (each contract's farmer is its token's address): the
    hook the protocols call in the transaction that records the results. A pass, a fail or a counted
    miss ends the contract's containment. ``token_id``: only that token's contracts count (ids sent
    by a farmer)."""
    kinds = (("passes", passes), ("fails", fails), ("misses", misses), ("retries", retries))
    ids = sorted({int(i) for _, group in kinds for i in group})
    if not ids:
        return
    rows = txn.select_in(
        "SELECT c.id, t.address, c.contained, r.address FROM contracts c JOIN tokens t ON t.id = c.token_id "
        "LEFT JOIN reputation r ON r.address = t.address WHERE c.id IN {ids}"
        + ("" if token_id is None else " AND c.token_id = ?"), ids, after=() if token_id is None else (token_id,))
    address_of = {int(cid): address for cid, address, _, _ in rows}
    ensure_txn(txn, [address for _, address, _, known in rows if known is None])
    tallies: dict[str, Tally] = defaultdict(Tally)
    for column, group in kinds:
        for cid in group:
            address = address_of.get(int(cid))
            if address is not None:
                setattr(tallies[address], column, getattr(tallies[address], column) + 1)
    settled = {int(i) for i in (*passes, *fails, *misses)}
    txn.update_in("UPDATE contracts SET contained = 0 WHERE id IN {ids} AND contained > 0",
                  sorted(int(cid) for cid, _, contained, _ in rows if contained and int(cid) in settled))
    _note_containment(txn, rules, rows, {int(i): "pass" for i in passes} | {int(i): "fail" for i in fails}
                      | {int(i): "miss" for i in misses}, {int(i) for i in retries})
    record_txn(txn, rules, now, tallies)


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
    left = tuple(sorted(results))
    if left:
        txn.note(ContainmentChange(address, protocol, (), left, rules.containment_retries))


def _note_containment(txn: Txn, rules: Rules, rows: Sequence[Sequence[Any]], settled: Mapping[int, str],
                      retried: set[int]) -> None:
    """Note, per farmer, the contracts that entered containment (asked again for the first time:
    ``contained`` is 1 after the re-ask) and those a result took out of it."""
    entered: dict[str, list[int]] = defaultdict(list)
    left: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for cid, address, contained, _ in rows:
        cid, contained = int(cid), int(contained or 0)
        if cid in retried and contained == 1:
            entered[address].append(cid)
        elif cid in settled and contained > 0:
            left[address].append((cid, settled[cid]))
    for address in sorted(set(entered) | set(left)):
        txn.note(ContainmentChange(address, None, tuple(sorted(entered.get(address, ()))),
                                   tuple(sorted(left.get(address, ()))), rules.containment_retries))


def move_counts_token_txn(txn: Txn, token_id: int, fails: int = 0, misses: int = 0) -> None:
    """Change a token's farmer's ``fails`` and ``misses`` counts without touching its scores (a
    late answer that settles a miss the timer counted: db/late.py); a count never goes below 0."""
    txn.execute("UPDATE reputation SET fails = CASE WHEN fails + ? < 0 THEN 0 ELSE fails + ? END, "
                "misses = CASE WHEN misses + ? < 0 THEN 0 ELSE misses + ? END "
                "WHERE address = (SELECT address FROM tokens WHERE id = ?)",
                (fails, fails, misses, misses, token_id))


def record_errors_txn(txn: Txn, rules: Rules, now: float, address: str, errors: int) -> None:
    """Count ``errors`` malformed requests or errors on the farmer's side (the unknown score)."""
    ensure_txn(txn, [address])
    record_txn(txn, rules, now, {address: Tally(errors=errors)})


# --- containment ------------------------------------------------------------------------------

def _forgiven(forgive: tuple[float, float] | None, deadline: float, interval: float) -> bool:
    return forgive is not None and forgive[0] < deadline <= forgive[1] + interval


def contain_v0_txn(txn: Txn, rules: Rules, now: float, forgive: tuple[float, float] | None,
                   ids: Sequence[int]) -> set[int]:
    """In the v0 timer pass, for the due contracts among ``ids`` (the pass's page) whose challenge
    went unanswered: one asked fewer than ``containment_retries`` times is asked the *same*
    challenge again in the current window (``contained`` + 1, an online failure, no miss); the
    others are left to the pass, which counts their miss (and the reputation's counted miss resets
    ``contained``). A deadline the ``forgive`` window covers is left to the pass (forgiven). Returns
    the ids asked again (the pass leaves them alone): deciding on the pass's own page means a
    contract is never judged missed without its containment first, nor counted twice."""
    if rules.containment_retries <= 0 or not ids:
        return set()
    rows = txn.select_in(
        "SELECT id, start, interval_s, seq, deadline, contained FROM contracts WHERE id IN {ids} "
        "AND state = 'active' AND protocol = 0 AND deadline <= ? AND answered = 0 AND challenge_id IS NOT NULL "
        "AND contained < ?", sorted(ids), after=[now, rules.containment_retries])
    again = []
    for cid, start, interval, seq, deadline, contained in rows:
        if not _forgiven(forgive, deadline, interval):
            k = max(seq + 1, math.floor((now - start) / interval))
            again.append((cid, k, start + k * interval, start + (k + 1) * interval, contained + 1))
    txn.update_by_id("contracts", ["seq", "issued", "deadline", "contained"], again, where="state = 'active'")
    record_contracts_txn(txn, rules, now, retries=[cid for cid, *_ in again])
    return {int(cid) for cid, *_ in again}


def contain_v1_txn(txn: Txn, rules: Rules, now: float, limit: int) -> tuple[int, list[int]]:
    """Before v1 expiry fails unanswered contracts: one whose challenge went unanswered gets the
    *same* challenge due one more interval later (``contained`` + 1, an online failure), until it
    was asked ``containment_retries`` times; then the expiry fails it (recorded here as a counted
    miss). Returns (contracts contained, ids whose miss counts)."""
    rows = txn.execute(
        "SELECT id, due, interval_s, contained FROM contracts WHERE state = 'active' AND protocol = 1 "
        "AND deadline <= ? AND answered = 0 ORDER BY deadline LIMIT ?" + txn.for_update(),
        (now, limit)).fetchall()
    again, counted = [], []
    for cid, due, interval, contained in rows:
        if due is not None and contained < rules.containment_retries:
            windows = max(1, math.floor((now - due) / interval) + 1)
            new_due = due + windows * interval
            again.append((cid, new_due, new_due, contained + 1))
        else:
            counted.append(int(cid))
    txn.update_by_id("contracts", ["due", "deadline", "contained"], again, where="state = 'active'")
    record_contracts_txn(txn, rules, now, misses=counted, retries=[cid for cid, *_ in again])
    return len(again), counted


# --- who gets new contracts -------------------------------------------------------------------

class NotEligible(Exception):
    """The farmer may get no new contracts now (``reason``: disqualified, suspended, contained)."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


def probation_mark(rules: Rules) -> float:
    """The audit score under which a vetted farmer is treated as not vetted (halfway from the
    disqualification threshold to 1: 0.98 at the default 0.96)."""
    return (1.0 + rules.dq_threshold) / 2


def eligible_txn(txn: Txn, rules: Rules, address: str) -> bool:
    """Raise :class:`NotEligible` for a disqualified, suspended or contained farmer. Otherwise
    return whether it is *preferred*: vetted (``vetting_audits`` passes) with an audit score at or
    above :func:`probation_mark`; the others share the vetting share."""
    row = txn.execute("SELECT status, passes, audit_alpha, audit_beta FROM reputation WHERE address = ?",
                      (address,)).fetchone()
    status, passes, alpha, beta = (OK, 0, INITIAL_ALPHA, 0.0) if row is None else row
    if status == DISQUALIFIED:
        raise NotEligible(DISQUALIFIED, "this farmer is disqualified: its audit score fell below the threshold")
    if status == SUSPENDED:
        raise NotEligible(SUSPENDED, "this farmer is suspended (repeated malformed requests or errors)")
    if txn.scalar("SELECT c.id FROM contracts c JOIN tokens t ON t.id = c.token_id WHERE c.contained > 0 "
                  "AND c.state = 'active' AND t.address = ? LIMIT 1", (address,)) is not None:
        raise NotEligible("contained", "this farmer is in containment: answer the outstanding challenge first")
    return int(passes) >= rules.vetting_audits and score(float(alpha), float(beta)) >= probation_mark(rules)


def anyone_vetted_txn(txn: Txn, rules: Rules) -> bool:
    """Is any farmer in good standing vetted? (If not, there is no one to prefer.)"""
    return txn.scalar("SELECT address FROM reputation WHERE status = 'ok' AND passes >= ? LIMIT 1",
                      (rules.vetting_audits,)) is not None


def take_share_txn(txn: Txn, rules: Rules, protocol: int, preferred: bool) -> bool:
    """Count one newly assigned contract of ``protocol``; for a farmer that is not preferred (not
    vetted yet, or on probation: see :func:`eligible_txn`) only while their share stays within
    ``vetting_share`` (one guarded UPDATE of the counter row: concurrent assignments queue on its
    row lock, so the share holds). While no farmer is vetted at all there is no one to prefer:
    the others are counted and served. False: not now."""
    if preferred:
        txn.execute("UPDATE vetting SET total = total + 1 WHERE protocol = ?", (protocol,))
        return True
    if not anyone_vetted_txn(txn, rules):
        txn.execute("UPDATE vetting SET total = total + 1, unvetted = unvetted + 1 WHERE protocol = ?", (protocol,))
        return True
    return txn.execute(
        "UPDATE vetting SET total = total + 1, unvetted = unvetted + 1 WHERE protocol = ? "
        "AND unvetted + 1 <= ? * (total + 1)", (protocol, rules.vetting_share)).rowcount > 0


def untake_share_txn(txn: Txn, protocol: int, preferred: bool) -> None:
    """Give back a share taken for an assignment that did not happen (same transaction)."""
    txn.execute("UPDATE vetting SET total = total - 1, unvetted = unvetted - ? WHERE protocol = ?",
                (0 if preferred else 1, protocol))


# --- the reputation job -----------------------------------------------------------------------

@dataclass
class SweepResult:
    #: suspended farmers disqualified because their grace ran out
    expired: list[str] = field(default_factory=list)
    #: disqualified farmers whose contracts were ended, and how many
    ended: dict[str, int] = field(default_factory=dict)


def sweep_txn(txn: Txn, rules: Rules, now: float, limit: int = 50) -> SweepResult:
    """Disqualify farmers suspended for longer than ``suspension_grace``; end every active contract
    of (at most ``limit``) disqualified farmers that still hold some (their files' replica slots are
    freed: the repair path gives them to other farmers); halve the vetting counters past their
    window."""
    result = SweepResult()
    result.expired = [r[0] for r in txn.execute(
        "SELECT address FROM reputation WHERE status = ? AND status_since <= ? ORDER BY address" + txn.for_update(),
        (SUSPENDED, now - rules.suspension_grace)).fetchall()]
    txn.update_in(f"UPDATE reputation SET status = '{DISQUALIFIED}', status_since = ?, status_reason = ?, "
                  "pending_end = 1 WHERE address IN {ids} AND status = 'suspended'", result.expired,
                  before=[now, "suspended for longer than suspension_grace"])
    for (address,) in txn.execute(
        "SELECT address FROM reputation WHERE status = ? AND pending_end = 1 ORDER BY address LIMIT ?",
        (DISQUALIFIED, limit)).fetchall():
        v1 = txn.execute("SELECT c.id, c.file_id FROM contracts c JOIN tokens t ON t.id = c.token_id "
                         "WHERE t.address = ? AND c.state = 'active' AND c.protocol = 1", (address,)).fetchall()
        result.ended[address] = end_where_txn(
            txn, "token_id IN (SELECT id FROM tokens WHERE address = ?)", (address,), now, "disqualified", FAILED)
        # v1: as at expiry, the tags go and the single-use seeded files are retired
        txn.update_in("DELETE FROM contract_tags WHERE contract_id IN {ids}", [int(c) for c, _ in v1])
        txn.update_in("UPDATE files SET replicas = 0, removed = ? WHERE id IN {ids} AND removed IS NULL",
                      [int(f) for _, f in v1], before=[now])
        txn.execute("UPDATE reputation SET pending_end = 0 WHERE address = ?", (address,))
    if float(txn.scalar("SELECT MAX(total) FROM vetting") or 0) >= VETTING_WINDOW:  # read first: no lock
        txn.execute("UPDATE vetting SET total = total / 2, unvetted = unvetted / 2 WHERE total >= ?",
                    (VETTING_WINDOW,))
    return result


def reinstate_txn(txn: Txn, address: str, now: float) -> str | None:
    """The operator lifts a disqualification or suspension: status ok, audit and unknown scores
    fresh (counts and the online score kept). Returns the status before, None for no such farmer; a
    farmer that is neither disqualified nor suspended is left as it is."""
    before = txn.scalar("SELECT status FROM reputation WHERE address = ?" + txn.for_update(), (address,))
    if before is None or before not in (DISQUALIFIED, SUSPENDED):
        return before
    txn.execute("UPDATE reputation SET status = 'ok', status_since = ?, status_reason = ?, pending_end = 0, "
                "audit_alpha = ?, audit_beta = 0, unknown_alpha = ?, unknown_beta = 0 WHERE address = ?",
                (now, "reinstated by the operator", INITIAL_ALPHA, INITIAL_ALPHA, address))
    return str(before)


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
        out.update(audit_score=self.audit_score, online_score=self.online_score, unknown_score=self.unknown_score,
                   vetted=self.passes >= vetting_audits)
        return out


_COLUMNS = ("address, audit_alpha, audit_beta, online_alpha, online_beta, unknown_alpha, unknown_beta, passes, "
            "fails, misses, retries, errors, status, status_since, status_reason")


def of_addresses_txn(txn: Txn, addresses: Sequence[str]) -> dict[str, Reputation]:
    """The reputation of each address that has one, with its contracts in containment."""
    wanted = sorted(set(addresses))
    contained = {a: int(n) for a, n in txn.select_in(
        "SELECT t.address, COUNT(*) FROM contracts c JOIN tokens t ON t.id = c.token_id WHERE c.contained > 0 "
        "AND c.state = 'active' AND t.address IN {ids} GROUP BY t.address", wanted)}
    out = {}
    for r in txn.select_in(f"SELECT {_COLUMNS} FROM reputation WHERE address IN {{ids}}", wanted):
        out[r[0]] = Reputation(r[0], *(float(x) for x in r[1:7]), *(int(x) for x in r[7:12]), r[12],
                               None if r[13] is None else float(r[13]), r[14], contained.get(r[0], 0))
    return out


def counts_txn(txn: Txn, vetting_audits: int) -> dict[str, int]:
    """Farmers by standing (the metrics): ok, suspended, disqualified, contained, unvetted."""
    out = {OK: 0, SUSPENDED: 0, DISQUALIFIED: 0}
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

    def __init__(self, db: Database, rules: Rules = DEFAULT_RULES):
        self.db = db
        self.rules = rules

    def of_addresses(self, addresses: Sequence[str]):
        """Fires with ``{address: Reputation}`` (addresses without a row are left out)."""
        return self.db.run("reputation_of", of_addresses_txn, list(addresses))

    def record_errors(self, token_hash: bytes, errors: int, now: float):
        """Count errors on the side of the farmer of a live token. Fires with its address (None for
        no live token: nothing is counted)."""

        def body(txn: Txn) -> str | None:
            address = txn.scalar("SELECT address FROM tokens WHERE token_hash = ? AND deleted IS NULL", (token_hash,))
            if address is not None:
                record_errors_txn(txn, self.rules, now, address, errors)
            return address

        return self.db.run("reputation_errors", body)

    def sweep(self, now: float):
        """Fires with a :class:`SweepResult`: see :func:`sweep_txn`."""
        return self.db.run("reputation_sweep", sweep_txn, self.rules, now)

    def reinstate(self, address: str, now: float):
        """Fires with the status before, or None: see :func:`reinstate_txn`."""
        return self.db.run("reputation_reinstate", reinstate_txn, address, now)

    def counts(self):
        """Fires with farmers by standing: see :func:`counts_txn`."""
        return self.db.run("reputation_counts", counts_txn, self.rules.vetting_audits)

    def vetting(self):
        """Fires with ``{protocol: (total, unvetted)}`` of the vetting counters."""
        return self.db.run("vetting_counts", lambda txn: {int(p): (float(t), float(u)) for p, t, u in txn.execute(
            "SELECT protocol, total, unvetted FROM vetting").fetchall()})
