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

from downstream_tx.db import meta
from downstream_tx.db import online as online_db
from downstream_tx.db.database import Database, Txn
from downstream_tx.db.replicas import FAILED, end_where_txn
from downstream_tx.domain import assignments, online
from downstream_tx.domain.assignments import VettingRules
from downstream_tx.domain.online import DEFAULT_ONLINE, OnlineRules

#: the forgetting factor and the weight of one result
LAMBDA = 0.999
WEIGHT = 1.0
#: a new farmer's alpha: 1 / (1 - λ), the steady state of one that always passes
INITIAL_ALPHA = 1000.0

OK, SUSPENDED, DISQUALIFIED = "ok", "suspended", "disqualified"
#: suspended for being offline (domain/online.py): no new contracts, never disqualified for it
OFFLINE = online.OFFLINE


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
    #: the unknown-error score's own forgetting factor (``unknown_lambda``)
    unknown_lam: float = 0.98
    vetting_window: float = 1000.0
    vetting_min_age: float = 0.0
    online: OnlineRules = DEFAULT_ONLINE

    @property
    def vetting(self) -> VettingRules:
        return VettingRules(self.vetting_audits, self.vetting_share, self.vetting_window, self.vetting_min_age,
                            self.dq_threshold)


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
    alpha_add, beta_add = online.decay(0.0, 0.0, successes, failures, lam)  # the one closed form (domain/)
    return lam ** (successes + failures), alpha_add, beta_add


def score(alpha: float, beta: float) -> float:
    return alpha / (alpha + beta) if alpha + beta > 0 else 1.0


def dimensions(t: Tally) -> dict[str, tuple[int, int]]:
    """(successes, failures) of each score a tally changes. The online score is not one of them: it
    counts online windows, once per farmer (domain/online.py, :func:`downstream_tx.db.online.windows_txn`)."""
    answered = t.passes + t.fails
    return {"audit": (t.passes, t.fails + t.misses), "unknown": (answered, t.errors)}


def lam_of(rules: Rules, name: str) -> float:
    """The forgetting factor of a score: the unknown-error score has its own."""
    return rules.unknown_lam if name == "unknown" else rules.lam


def initial_alpha(lam: float) -> float:
    """A fresh score's alpha: 1 / (1 - λ), the steady state of a farmer that always succeeds."""
    return 1.0 / (1.0 - lam) if lam < 1 else INITIAL_ALPHA


# --- recording --------------------------------------------------------------------------------

def ensure_txn(txn: Txn, addresses: Iterable[str], rules: Rules | None = None) -> None:
    """A reputation row (fresh scores) for each address that has none."""
    verb = "INSERT OR IGNORE" if txn.engine_name == "sqlite" else "INSERT IGNORE"
    rules = rules or DEFAULT_RULES
    unknown, online_alpha = initial_alpha(rules.unknown_lam), initial_alpha(rules.online.lam)
    txn.executemany(f"{verb} INTO reputation (address, unknown_alpha, online_alpha) VALUES (?, ?, ?)",
                    [(a, unknown, online_alpha) for a in sorted(set(addresses))])


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
        ensure_txn(txn, [txn.scalar("SELECT address FROM tokens WHERE id = ?", (token_id,))], rules)
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
        values[f"{name}_scale"], values[f"{name}_alpha"], values[f"{name}_beta"] = coefficients(
            *dims[name], lam_of(rules, name))
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
    ensure_txn(txn, [address for _, address, _, known in rows if known is None], rules)
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
    ensure_txn(txn, [address], rules)
    record_txn(txn, rules, now, {address: Tally(errors=errors)})


# --- containment ------------------------------------------------------------------------------

def _forgiven(forgive: tuple[float, float] | None, deadline: float, interval: float) -> bool:
    return forgive is not None and forgive[0] < deadline <= forgive[1] + interval


def contain_v0_txn(txn: Txn, rules: Rules, now: float, forgive: tuple[float, float] | None,
                   ids: Sequence[int]) -> set[int]:
    """In the v0 timer pass, for the due contracts among ``ids`` (the pass's page) whose challenge
    went unanswered while their farmer was active (the pass leaves out those of farmers that were
    offline: db/online.py): one asked fewer than ``containment_retries`` times is asked the *same*
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
    """Before v1 expiry fails unanswered contracts: one whose challenge went unanswered while its
    farmer was active (db/online.py) gets the
    *same* challenge due one more interval later (``contained`` + 1, an online failure), until it
    was asked ``containment_retries`` times; then the expiry fails it (recorded here as a counted
    miss). Returns (contracts contained, ids whose miss counts)."""
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
    """The farmer may get no new contracts now (``reason``: disqualified, suspended, offline,
    contained)."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


def probation_mark(rules: Rules) -> float:
    """The audit score under which a vetted farmer is treated as not vetted (halfway from the
    disqualification threshold to 1: 0.98 at the default 0.96)."""
    return assignments.probation_mark(rules.dq_threshold)


def vetted_of(rules: Rules, passes: int, alpha: float, beta: float, first_token: float | None,
              now: float | None) -> bool:
    """The vetting rule (domain/assignments.py) on a reputation row; ``first_token``: when the
    address's first token was made (``now`` None: the age is not checked)."""
    age = math.inf if now is None or first_token is None else now - float(first_token)
    return assignments.vetted(int(passes), score(float(alpha), float(beta)), age, rules.vetting)


def eligible_txn(txn: Txn, rules: Rules, address: str, now: float | None = None) -> bool:
    """Raise :class:`NotEligible` for a disqualified, suspended (errors or offline) or contained
    farmer. Otherwise return whether it is *preferred*: vetted (domain/assignments.py: passes, an
    audit score at or above :func:`probation_mark`, the minimum age); the others share the vetting
    share. The verdict is kept in the row's ``vetted`` (what ``farmer show`` reports)."""
    row = txn.execute("SELECT r.status, r.passes, r.audit_alpha, r.audit_beta, r.vetted, "
                      "(SELECT MIN(t.created) FROM tokens t WHERE t.address = r.address) "
                      "FROM reputation r WHERE r.address = ?", (address,)).fetchone()
    status, passes, alpha, beta, was, first = (OK, 0, INITIAL_ALPHA, 0.0, None, None) if row is None else row
    if status == DISQUALIFIED:
        raise NotEligible(DISQUALIFIED, "this farmer is disqualified: its audit score fell below the threshold")
    if status == SUSPENDED:
        raise NotEligible(SUSPENDED, "this farmer is suspended (repeated malformed requests or errors)")
    if status == OFFLINE:
        raise NotEligible(OFFLINE, "this farmer is suspended for being offline: its online score is below the "
                                   "offline_threshold; it is lifted once the score is back")
    if txn.scalar("SELECT c.id FROM contracts c JOIN tokens t ON t.id = c.token_id WHERE c.contained > 0 "
                  "AND c.state = 'active' AND t.address = ? LIMIT 1", (address,)) is not None:
        raise NotEligible("contained", "this farmer is in containment: answer the outstanding challenge first")
    preferred = vetted_of(rules, passes, alpha, beta, first, now)
    if was is not None and bool(was) != preferred:
        txn.execute("UPDATE reputation SET vetted = ? WHERE address = ?", (int(preferred), address))
    return preferred


def anyone_vetted_txn(txn: Txn, rules: Rules, now: float | None = None) -> bool:
    """Is any farmer in good standing vetted (its passes and, with a ``vetting_min_age`` and
    ``now``, its age)? If not, there is no one to prefer."""
    if rules.vetting_min_age > 0 and now is not None:
        return txn.scalar(
            "SELECT r.address FROM reputation r WHERE r.status = 'ok' AND r.passes >= ? AND EXISTS "
            "(SELECT 1 FROM tokens t WHERE t.address = r.address AND t.created <= ?) LIMIT 1",
            (rules.vetting_audits, now - rules.vetting_min_age)) is not None
    return txn.scalar("SELECT address FROM reputation WHERE status = 'ok' AND passes >= ? LIMIT 1",
                      (rules.vetting_audits,)) is not None


def take_share_txn(txn: Txn, rules: Rules, protocol: int, preferred: bool, now: float | None = None) -> bool:
    """Count one newly assigned contract of ``protocol``; for a farmer that is not preferred (not
    vetted yet, or on probation: see :func:`eligible_txn`) only while their share stays within
    ``vetting_share`` (one guarded UPDATE of the counter row: concurrent assignments queue on its
    row lock, so the share holds). The counters forget (domain/assignments.py: the share is over
    about the last ``vetting_window`` assignments). While no farmer is vetted at all there is no one
    to prefer: the others are served and nothing is counted (so new farmers are not starved by the
    start). False: not now."""
    keep = assignments.keep(rules.vetting)
    if preferred:
        txn.execute("UPDATE vetting SET total = total * ? + 1, unvetted = unvetted * ? WHERE protocol = ?",
                    (keep, keep, protocol))
        return True
    if not anyone_vetted_txn(txn, rules, now):
        return True
    # the same test as assignments.allows, on the locked row
    return txn.execute(
        "UPDATE vetting SET total = total * ? + 1, unvetted = unvetted * ? + 1 WHERE protocol = ? "
        "AND unvetted * ? + 1 <= ? * (total * ? + 1)",
        (keep, keep, protocol, keep, rules.vetting_share, keep)).rowcount > 0


def untake_share_txn(txn: Txn, rules: Rules, protocol: int, preferred: bool, now: float | None = None) -> None:
    """Give back a share taken for an assignment that did not happen (same transaction)."""
    if not preferred and not anyone_vetted_txn(txn, rules, now):
        return  # nothing was counted
    keep = assignments.keep(rules.vetting)
    txn.execute("UPDATE vetting SET total = (total - 1) / ?, unvetted = (unvetted - ?) / ? WHERE protocol = ?",
                (keep, 0 if preferred else 1, keep, protocol))


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
    """Disqualify farmers suspended for longer than ``suspension_grace``; end every active contract
    of (at most ``limit``) disqualified farmers that still hold some (their files' replica slots are
    freed: the repair path gives them to other farmers)."""
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
    result.online, result.online_more = online_windows_txn(txn, rules, now, limit)
    return result


def reinstate_txn(txn: Txn, address: str, now: float, rules: Rules | None = None) -> str | None:
    """The operator lifts a disqualification or suspension: status ok, audit and unknown scores
    fresh (counts and the online score kept). Returns the status before, None for no such farmer; a
    farmer that is neither disqualified nor suspended is left as it is."""
    before = txn.scalar("SELECT status FROM reputation WHERE address = ?" + txn.for_update(), (address,))
    if before is None or before not in (DISQUALIFIED, SUSPENDED):
        return before
    txn.execute("UPDATE reputation SET status = 'ok', status_since = ?, status_reason = ?, pending_end = 0, "
                "audit_alpha = ?, audit_beta = 0, unknown_alpha = ?, unknown_beta = 0 WHERE address = ?",
                (now, "reinstated by the operator", INITIAL_ALPHA, initial_alpha((rules or DEFAULT_RULES).unknown_lam),
                 address))
    return str(before)


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
        preferred = vetted_of(rules, passes, a_alpha, a_beta, first, now)
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
    out["contained"] = int(txn.scalar(
        "SELECT COUNT(DISTINCT t.address) FROM contracts c JOIN tokens t ON t.id = c.token_id WHERE c.contained > 0 "
        "AND c.state = 'active'") or 0)
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
        return self.db.run("reputation_reinstate", reinstate_txn, address, now, self.rules)

    def counts(self):
        """Fires with farmers by standing: see :func:`counts_txn`."""
        return self.db.run("reputation_counts", counts_txn, self.rules.vetting_audits)

    def vetting(self):
        """Fires with ``{protocol: (total, unvetted)}`` of the vetting counters."""
        return self.db.run("vetting_counts", lambda txn: {int(p): (float(t), float(u)) for p, t, u in txn.execute(
            "SELECT protocol, total, unvetted FROM vetting").fetchall()})
