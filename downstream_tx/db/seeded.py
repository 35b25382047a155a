"""Protocol v1: the pool of pre-encoded seeded chunks and the v1 (Merkle heartbeat) contracts.

A v1 contract keeps its current challenge's due time in ``due`` and its *expiration* in
``deadline`` (``due + interval`` once answered, ``due`` while unanswered), so that "is it expired"
is ``now >= deadline`` and the expiry timer is an index range scan on ``(state, protocol,
deadline)`` like the v0 timer.

A contract's heartbeat state is stored *sealed*: binary columns (:class:`Sealed`) that the node reads
and rewrites per challenge without any text encoding; its current challenge is derived from them
(seed = the state's seed, index = ``seq``). Rows written before schema step 5 hold the state and
challenge as JSON text in ``hb_state``/``hb_challenge`` until their next refresh rewrites them sealed.
The pool's chunks and every tag stay JSON text (they are read once, or sent as they are); a contract's
tag lives in ``contract_tags``, off the contract row that every cycle rewrites.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence, Sized
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from downstream_tx.db import counters, files, meta, reputation
from downstream_tx.db.database import SHORT_BATCH, Database, Txn
from downstream_tx.db.replicas import retire_v1_txn
from downstream_tx.db.tokens import lookup_txn, use_from_ip_txn
from downstream_tx.domain import containment, verdicts
from downstream_tx.domain.rules import Rules
from downstream_tx.domain.scores import Tally

#: the largest id a contract can have (SQLite and MySQL signed 64-bit)
MAX_ID = (1 << 63) - 1


@dataclass(frozen=True)
class EncodedChunk:
    """A seeded chunk encoded off the reactor thread, ready to enter the pool."""

    seed: str
    size: int
    file_hash: str
    hb_state: str
    tag: str


@dataclass(frozen=True)
class PoolChunk:
    id: int
    file_id: int
    size: int
    seed: str
    hb_state: str
    tag: str


class Sealed(NamedTuple):
    """A v1 heartbeat state as its contract row stores it: the state's seed (also the seed of the
    challenge it last made), its challenge count, Merkle root, HMAC and ``str()`` of its timestamp
    (exactly as signed). The state's index is the contract's ``seq`` + 1."""

    seed: bytes
    n: int
    root: bytes
    hmac: bytes
    time: str


class IssuedChallenge(NamedTuple):
    """A challenge made for a contract: the heartbeat state after it, the challenge as JSON text
    (what the farmer is sent), and the challenge's index (the contract's ``seq``)."""

    sealed: Sealed
    hb_challenge: str
    index: int


class NewContract(NamedTuple):
    id: int
    chunk: PoolChunk
    issued: IssuedChallenge
    due: float


class Refresh(NamedTuple):
    """A challenge refresh: the state after it, its ``seq``, the new due time, when it was issued,
    the contract and the due time it replaces (the write's guard)."""

    sealed: Sealed
    seq: int
    new_due: float
    issued: float
    id: int
    old_due: float | None
    #: the row was written before schema step 5 (it becomes sealed)
    legacy: bool = False


class V1Contract(NamedTuple):
    """A named tuple: one is built per id of every /challenge and /answer, and a named tuple is the
    cheapest record to build (docs/performance.md). ``sealed`` is None for a row written before
    schema step 5 (its state is then the JSON in ``hb_state``/``hb_challenge``)."""

    id: int
    state: str
    due: float | None
    deadline: float
    answered: bool
    interval: int
    seq: int
    sealed: Sealed | None
    hb_state: str | None = None
    hb_challenge: str | None = None


# --- the pool -------------------------------------------------------------------------------------

def pool_counts_txn(txn: Txn) -> dict[int, int]:
    """Chunks ready, by size."""
    return {int(size): int(n) for size, n in txn.execute(
        "SELECT size, COUNT(*) FROM seeded_pool GROUP BY size"
    ).fetchall()}


def pool_add_txn(txn: Txn, chunks: Sequence[EncodedChunk], interval: int, now: float,
                 cap: int | None = None) -> int:
    """Record encoded chunks (a ``seeded`` file row each) and put them in the pool. A chunk whose
    file hash is already recorded is skipped, so a retried transaction adds nothing twice. ``cap``:
    the pool holds at most that many chunks of each size afterwards (counted in this transaction:
    two refills that overlap never over-fill it; the jobs' fence serialises them)."""
    rows = []
    room: dict[int, int] = {}
    for chunk in chunks:
        if cap is not None:
            if chunk.size not in room:
                room[chunk.size] = cap - int(txn.scalar("SELECT COUNT(*) FROM seeded_pool WHERE size = ?",
                                                        (chunk.size,)))
            if room[chunk.size] <= 0:
                continue
            room[chunk.size] -= 1
        if txn.scalar("SELECT COUNT(*) FROM files WHERE file_hash = ? AND removed IS NULL", (chunk.file_hash,)):
            continue
        file_id = files.insert_txn(txn, file_hash=chunk.file_hash, kind="seeded", size=chunk.size, redundancy=1,
                                   interval=interval, now=now, seed=chunk.seed)
        rows.append((file_id, chunk.size, chunk.hb_state, chunk.tag, now))
    txn.executemany("INSERT INTO seeded_pool (file_id, size, hb_state, tag, created) VALUES (?, ?, ?, ?, ?)", rows)
    return len(rows)


def pool_take_txn(txn: Txn, max_size: int, attempts: int = 5) -> PoolChunk | None:
    """Remove and return the largest pooled chunk of at most ``max_size`` bytes (each chunk is
    handed out once), or None."""
    for _ in range(attempts):
        # two index seeks on seeded_pool (size, id): the largest size that fits, then its oldest
        # chunk (one "ORDER BY size DESC, id" query cannot use that index in mixed order and sorts
        # the whole pool on every take, see docs/performance.md)
        size = txn.scalar("SELECT MAX(size) FROM seeded_pool WHERE size <= ?", (max_size,))
        if size is None:
            return None
        row = txn.execute(
            "SELECT p.id, p.file_id, p.size, f.seed, p.hb_state, p.tag FROM seeded_pool p "
            "JOIN files f ON f.id = p.file_id WHERE p.size = ? ORDER BY p.id LIMIT 1" + txn.for_update(),
            (size,),
        ).fetchone()
        if row is None:
            return None
        if txn.execute("DELETE FROM seeded_pool WHERE id = ?", (row[0],)).rowcount:
            return PoolChunk(int(row[0]), int(row[1]), int(row[2]), row[3], row[4], row[5])
    return None


def discard_file_txn(txn: Txn, file_id: int, now: float) -> None:
    """Retire a seeded file that can no longer be used (its state does not verify)."""
    txn.execute("UPDATE files SET removed = ? WHERE id = ? AND removed IS NULL", (now, file_id))


# --- contracts ------------------------------------------------------------------------------------

def active_size_by_address_txn(txn: Txn, address: str, now: float) -> int:
    """Bytes under active, unexpired v1 contracts of every token of ``address``."""
    value = txn.scalar(
        "SELECT SUM(f.size) FROM tokens t JOIN contracts c ON c.token_id = t.id AND c.state = 'active' "
        "JOIN files f ON f.id = c.file_id WHERE t.address = ? AND c.protocol = 1 AND c.deadline > ?",
        (address, now),
    )
    return int(value or 0)


def insert_contract_txn(txn: Txn, token_id: int, file_id: int, now: float, interval: int, seq: int, due: float,
                        sealed: Sealed, tag: str) -> int:
    """A new v1 contract with its first challenge outstanding (expiration = due). The caller counts
    it (``counters.start_txn``: once for all the contracts of a request)."""
    txn.execute(
        "INSERT INTO contracts (token_id, file_id, protocol, state, start, interval_s, seq, issued, deadline, due, "
        "answered, hb_seed, hb_n, hb_root, hb_hmac, hb_time) "
        "VALUES (?, ?, 1, 'active', ?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?, ?)",
        (token_id, file_id, now, interval, seq, now, due, due, *sealed),
    )
    contract_id = txn.lastrowid
    txn.execute("INSERT INTO contract_tags (contract_id, tag) VALUES (?, ?)", (contract_id, tag))
    txn.execute("UPDATE files SET replicas = 1 WHERE id = ?", (file_id,))
    return contract_id


def _wanted(ids: Iterable[int]) -> list[int]:
    return sorted({i for i in ids if 0 < i <= MAX_ID})


def _contract(r: tuple) -> V1Contract:
    sealed = None if r[7] is None else Sealed(bytes(r[7]), r[8], bytes(r[9]), bytes(r[10]), r[11])
    return V1Contract(r[0], r[1], r[2], r[3], bool(r[4]), r[5], r[6], sealed)


def get_contracts_txn(txn: Txn, token_id: int, ids: Iterable[int], lock: bool = True) -> dict[int, V1Contract]:
    """The token's v1 contracts (any state) among ``ids``. The JSON of rows written before schema
    step 5 is read by a second query, for those rows only (a server engine decodes every column of
    every row it sends)."""
    rows = txn.select_in(
        "SELECT id, state, due, deadline, answered, interval_s, seq, hb_seed, hb_n, hb_root, hb_hmac, hb_time "
        "FROM contracts WHERE token_id = ? AND protocol = 1 AND id IN {ids}" + (txn.for_update() if lock else ""),
        _wanted(ids), before=[token_id])
    found = {r[0]: _contract(r) for r in rows}
    legacy = [cid for cid, c in found.items() if c.sealed is None]
    for cid, hb_state, hb_challenge in txn.select_in(
            "SELECT id, hb_state, hb_challenge FROM contracts WHERE id IN {ids}", legacy):
        found[cid] = found[cid]._replace(hb_state=hb_state, hb_challenge=hb_challenge)
    return found


def active_ids_txn(txn: Txn, token_id: int) -> list[int]:
    return [int(r[0]) for r in txn.execute(
        "SELECT id FROM contracts WHERE token_id = ? AND state = 'active' AND protocol = 1 ORDER BY id", (token_id,)
    ).fetchall()]


def set_challenges_txn(txn: Txn, updates: Sequence[Refresh], answered: set[int]) -> None:
    """Store newly issued challenges; the expiration becomes the new due time (a row written before
    schema step 5 becomes sealed and loses its JSON). Guarded on the old due time, so a retried
    transaction changes nothing twice. One statement per chunk on MariaDB (PyMySQL's executemany
    sends an UPDATE per row: a round trip per refreshed contract). ``answered``: the ids among them
    whose ``answered`` is 1 (read under the row locks)."""
    moving = ["seq", "due", "deadline", "issued", "answered"]
    # the unanswered counter: a refresh of an answered contract makes it unanswered (guarded on the
    # old ``answered`` as well, so what is counted is what changed)
    for was in (1, 0):
        part = [r for r in updates if (r.id in answered) == was]
        # a sealed state changes only its seed and HMAC per challenge (a server engine escapes every value sent)
        changed = txn.update_by_id(
            "contracts", ["hb_seed", "hb_hmac", *moving],
            [(r.id, r.sealed.seed, r.sealed.hmac, r.seq, r.new_due, r.new_due, r.issued, 0, r.old_due, was)
             for r in part if not r.legacy], where="state = 'active'", match=["due", "answered"])
        changed += txn.update_by_id(
            "contracts", ["hb_seed", "hb_n", "hb_root", "hb_hmac", "hb_time", "hb_state", "hb_challenge", *moving],
            [(r.id, *r.sealed, None, None, r.seq, r.new_due, r.new_due, r.issued, 0, r.old_due, was)
             for r in part if r.legacy], where="state = 'active'", match=["due", "answered"])
        txn.count({counters.unanswered(1): changed * was})


class AnswerLost(NamedTuple):
    """Why a verified proof was not recorded: what the contract became between its read and the write."""

    id: int
    reason: str  # "expired" or "answered"


def record_answers_txn(txn: Txn, token_id: int, passes: dict[int, int], fails: Sequence[int], now: float,
                       careful: bool = False) -> tuple[int, list[AnswerLost]]:
    """Record proofs verified outside the transaction. ``passes`` maps a contract to the ``seq`` of
    the challenge its proof answered: it is recorded (answered, expiration moves to due + interval,
    the token's heartbeat count goes up once) only if the contract is still active, unexpired at
    ``now``, unanswered and at that ``seq``. One guarded UPDATE per batch, whose row count is what is
    counted, so a retried or concurrent write never counts twice. If it changed fewer rows than
    ``passes`` (the contract changed since the read: rare), the transaction is given up
    (:class:`Contended`) and run again ``careful``: the guard columns are read under the row locks
    first, and each contract that is not recorded is returned as lost with why. A fail counts on a
    still unanswered contract. Returns (passes recorded, lost)."""
    lost: list[AnswerLost] = []
    if careful:
        rows = txn.select_in("SELECT id, seq, answered, state, deadline FROM contracts WHERE token_id = ? AND "
                             "protocol = 1 AND id IN {ids}" + txn.for_update(), _wanted(passes), before=[token_id])
        verified, passes = passes, {}
        for cid, seq, answered, state, deadline in rows:
            why = verdicts.v1_unrecorded(state == "active", deadline, bool(answered), seq, verified[cid], now)
            if why is None:
                passes[cid] = seq
            else:
                lost.append(AnswerLost(cid, why))
    counted = txn.update_matching(
        "contracts", ["answered = 1", "deadline = due + interval_s", "passes = passes + 1", "run = 0", "contained = 0"],
        ["id", "seq", "token_id"], [(cid, seq, token_id) for cid, seq in passes.items()],
        where="answered = 0 AND state = 'active' AND deadline > ?", args=[now])
    if counted != len(passes):
        raise Contended()
    txn.count({counters.unanswered(1): -counted})
    if counted:
        txn.execute("UPDATE tokens SET hbcount = hbcount + ? WHERE id = ?", (counted, token_id))
    txn.update_in("UPDATE contracts SET fails = fails + 1 WHERE id IN {ids} AND answered = 0", fails)
    return counted, lost


class Contended(Exception):
    """A guarded write changed fewer rows than it was given (see :func:`record_answers_txn`)."""


def tags_txn(txn: Txn, token_id: int, now: float) -> list[tuple[int, str]]:
    """(contract id, tag JSON) of the token's active, unexpired v1 contracts."""
    return [(int(r[0]), r[1]) for r in txn.execute(
        "SELECT c.id, t.tag FROM contracts c JOIN contract_tags t ON t.contract_id = c.id WHERE c.token_id = ? "
        "AND c.state = 'active' AND c.protocol = 1 AND c.deadline > ? ORDER BY c.id",
        (token_id, now),
    ).fetchall()]


#: node_meta marker: the end of the last downtime window already added to v1 contracts' clocks
SHIFTED_UNTIL = "v1_shifted_until"


def shift_for_downtime_txn(txn: Txn, start: float, end: float) -> int:
    """Downtime rule for v1: add the node's downtime ``(start, end]`` to the due time and expiration
    of every active v1 contract that had not expired when it began, so each gets back, after the
    node's return, the time it had left when the node went away. Exactly once per window: the
    window's end is stored in ``node_meta`` in the same transaction, and only the part of the window
    after a stored end is added (a retried or repeated call adds nothing twice). Returns the
    contracts moved."""
    marker = meta.locked_get_txn(txn, SHIFTED_UNTIL)  # two shifts at once: the second waits, adds nothing
    done = float(marker.decode("ascii")) if marker else 0.0
    begin = max(start, done)
    if end <= begin:
        return 0
    shift = end - begin
    moved = txn.execute(
        "UPDATE contracts SET due = due + ?, deadline = deadline + ? WHERE state = 'active' AND protocol = 1 "
        "AND deadline > ?",
        (shift, shift, start),
    ).rowcount
    meta.set_txn(txn, SHIFTED_UNTIL, repr(float(end)).encode("ascii"))
    return max(moved, 0)


@dataclass
class ExpireResult:
    ended: int = 0
    failed: int = 0
    #: unanswered challenges given one more interval in containment (not failed)
    contained: int = 0
    more: bool = False
    #: ids of the contracts failed (the contract timer logs each with its farmer and file)
    failed_ids: list[int] = field(default_factory=list)

    def add(self, page: ExpireResult) -> None:
        """Add a page's counts (the expiry runs page by page)."""
        self.ended += page.ended
        self.failed += page.failed
        self.contained += page.contained
        self.failed_ids += page.failed_ids


def expire_txn(txn: Txn, rules: Rules, now: float, limit: int = 5000) -> ExpireResult:
    """End one page of v1 contracts whose expiration has passed: *ended* when the last challenge
    was answered (the farmer stopped asking, or the challenges ran out), *failed* (a miss) when
    it was not. Their tags are dropped and their single-use seeded files retired. (Expirations that
    fell while the node was down were moved on first: :func:`shift_for_downtime_txn`.)"""
    # containment first: unanswered challenges asked again leave the expired range (reputation hook)
    contained, _ = reputation.contain_v1_txn(txn, rules, now, limit)
    rows = txn.execute(
        "SELECT id, file_id, answered, deadline, token_id FROM contracts WHERE state = 'active' AND protocol = 1 "
        "AND deadline <= ? ORDER BY deadline LIMIT ?" + txn.for_update(),
        (now, limit),
    ).fetchall()
    sizes = counters.files_size_txn(txn, {int(r[1]) for r in rows})
    result = ExpireResult(more=len(rows) == limit, contained=contained)
    judged = [(int(cid), verdicts.v1_at_expiry(bool(answered))) for cid, _, answered, _, _ in rows]
    ended = [cid for cid, verdict in judged if not verdict.failed]
    failed = [cid for cid, verdict in judged if verdict.failed]
    result.ended, result.failed = len(ended), len(failed)
    result.failed_ids = failed
    # set-based; ``ended = deadline``: each contract ends at its own expiration
    for ids, state, reason, miss in ((ended, "ended", "expired", 0), (failed, "failed", "missed", 1)):
        txn.update_in("UPDATE contracts SET state = ?, ended = deadline, end_reason = ?, misses = misses + ? "
                      "WHERE id IN {ids} AND state = 'active'", ids, before=[state, reason, miss])
    # (locked and active: every one changed)
    failing = set(failed)
    for state, ids in (("ended", set(ended)), ("failed", failing)):
        counters.end_txn(txn, [counters.Active(1, int(a), int(t), sizes.get(int(f), 0))
                               for cid, f, a, _, t in rows if int(cid) in ids], state)
    retire_v1_txn(txn, [int(cid) for cid, *_ in rows], [int(file_id) for _, file_id, *_ in rows], now)
    return result


def _take_chunks_txn(txn: Txn, token_hash: bytes, ip_hash: str | None, ip_limit: int, requested: int, now: float,
                     max_size_per_address: int, max_chunks: int, interval: int,
                     issue: Callable[[PoolChunk], IssuedChallenge | None],
                     location: tuple[str | None, str | None] = (None, None), *,
                     rules: Rules) -> list[NewContract]:
    row = lookup_txn(txn, token_hash, now, rules.online)
    use_from_ip_txn(txn, row, ip_hash, ip_limit, True, *location)
    preferred = reputation.eligible_txn(txn, rules, row.address, now)
    room = max_size_per_address - active_size_by_address_txn(txn, row.address, now)
    size = requested if requested < room else (room if room > 0 else 0)
    out: list[NewContract] = []
    total = 0
    while (max_chunks == 0 or len(out) < max_chunks) and total < size:
        if not reputation.take_share_txn(txn, rules, 1, preferred, now):
            break  # not vetted yet, and the unvetted share is used up
        chunk = pool_take_txn(txn, size - total)
        if chunk is None:
            reputation.untake_share_txn(txn, rules, 1, preferred, now)
            break
        issued = issue(chunk)
        if issued is None:  # this chunk can never be verified (e.g. the node secret changed)
            discard_file_txn(txn, chunk.file_id, now)
            reputation.untake_share_txn(txn, rules, 1, preferred, now)
            continue
        due = now + interval
        contract_id = insert_contract_txn(txn, row.id, chunk.file_id, now, interval, issued.index, due,
                                          issued.sealed, chunk.tag)
        out.append(NewContract(contract_id, chunk, issued, due))
        total += chunk.size
    if out:
        counters.start_txn(txn, 1, row.id, total, len(out))
    return out


class SeededStore:
    """The seeded pool and the v1 contracts. Each farmer call is one transaction that first looks
    the token up (:class:`~downstream_tx.db.tokens.UnknownToken` if it is not live) and, where the
    protocol records the client's address, applies the per-address token limit
    (:class:`~downstream_tx.db.tokens.IpLimitReached`).

    The protocol's rules come in as plain functions (``issue``, ``plan``) that see rows and return
    decisions: the store runs them inside its transaction, on rows it has locked, and writes what
    they decide."""

    def __init__(self, db: Database, rules: Rules):
        self.db = db
        #: the node's reputation settings
        self.rules = rules

    def _run(self, ids: Sized | None, desc: str, func: Callable[..., Any], *args: Any):
        """A farmer call's transaction: short for a small batch of ids (see :data:`SHORT_BATCH`)."""
        short = ids is not None and len(ids) <= SHORT_BATCH
        return (self.db.run_short if short else self.db.run)(desc, func, *args)

    # --- the pool
    def pool_counts(self):
        return self.db.run("v1_pool_counts", pool_counts_txn)

    def pool_add(self, chunks: Sequence[EncodedChunk], interval: int, now: float, cap: int | None = None):
        """Fires with the chunks added (see :func:`pool_add_txn`)."""
        return self.db.run("v1_pool_add", pool_add_txn, chunks, interval, now, cap)

    # --- farmer calls
    def take_chunks(self, token_hash: bytes, ip_hash: str | None, ip_limit: int, requested: int, now: float, *,
                    max_size_per_address: int, max_chunks: int, interval: int,
                    issue: Callable[[PoolChunk], IssuedChallenge | None],
                    location: tuple[str | None, str | None] = (None, None)):
        """Hand the token pooled chunks, largest that fit first, at most ``requested`` bytes in all
        and at most ``max_size_per_address`` bytes under the address's live contracts (``max_chunks``:
        0 for no limit). ``issue(chunk)`` makes each contract's first challenge (None: the chunk is
        unusable and is discarded). A token used from a new client address moves to it and takes
        ``location`` (``(GeoIP JSON, country)`` of that address). Fires with the new contracts."""
        return self.db.run("v1_chunk", _take_chunks_txn, token_hash, ip_hash, ip_limit, requested, now,
                           max_size_per_address, max_chunks, interval, issue, location, rules=self.rules)

    def refresh_challenges(self, token_hash: bytes, ids: Sequence[int] | None,
                           plan: Callable[[list[int], dict[int, V1Contract]], tuple[Any, list[Refresh]]],
                           now: float | None = None):
        """Lock the token's contracts among ``ids`` (None: its active ones), call ``plan(ids,
        contracts found)`` which returns ``(result, refreshes)``, store the refreshes (each guarded on
        its old due time) and fire with ``result``."""

        online_rules = self.rules.online

        def body(txn: Txn):
            row = lookup_txn(txn, token_hash, now, online_rules)
            wanted = active_ids_txn(txn, row.id) if ids is None else list(ids)
            found = get_contracts_txn(txn, row.id, wanted)
            result, refreshes = plan(wanted, found)
            set_challenges_txn(txn, refreshes, {cid for cid, c in found.items() if c.answered})
            return result

        return self._run(ids, "v1_challenge", body)

    def contracts(self, token_hash: bytes, ids: Sequence[int]):
        """Fires with the token's v1 contracts among ``ids`` (``{id: V1Contract}``, any state), read
        without locks: an /answer verifies its proofs on them outside any transaction, then
        :meth:`record_answers`."""

        def body(txn: Txn):
            return get_contracts_txn(txn, lookup_txn(txn, token_hash).id, ids, lock=False)

        return self._run(ids, "v1_answer_read", body)

    def record_answers(self, token_hash: bytes, ip_hash: str | None, ip_limit: int, passes: dict[int, int],
                       fails: Sequence[int], now: float, errors: int = 0,
                       after: Callable[[int, int], None] | None = None):
        """Record verified proofs (see :func:`record_answers_txn`), applying the per-address token
        limit first, and the farmer's reputation in the same transaction: its passes, fails and
        ``errors`` (proofs it sent malformed: its unknown-error score). ``after(passes recorded,
        fails)`` is called once the transaction has committed (:meth:`Txn.call_after`). Fires with
        (passes recorded, [AnswerLost])."""
        rules = self.rules

        def body(txn: Txn, careful: bool):
            row = lookup_txn(txn, token_hash, now, rules.online)
            use_from_ip_txn(txn, row, ip_hash, ip_limit, move=False)
            contained = reputation.contained_among_txn(txn, row.id, passes)
            counted, lost = record_answers_txn(txn, row.id, passes, fails, now, careful)
            tally = Tally(passes=counted, fails=len(fails), errors=errors)
            reputation.record_txn(txn, rules, now, {row.address: tally})
            gone = {x.id for x in lost}
            reputation.note_left_txn(txn, rules, row.address, 1,
                                     [(c, containment.PASS) for c in contained if c not in gone])
            if after is not None:
                txn.call_after(after, counted, len(fails))
            return counted, lost

        def contended(failure):
            failure.trap(Contended)
            return self._run(passes, "v1_answer", body, True)

        return self._run(passes, "v1_answer", body, False).addErrback(contended)

    def tags(self, token_hash: bytes, now: float):
        """Fires with (contract id, tag JSON) of the token's live contracts."""

        def body(txn: Txn):
            return tags_txn(txn, lookup_txn(txn, token_hash, now, self.rules.online).id, now)

        return self.db.run("v1_tags", body)

    # --- the contract timer
    def expire(self, now: float, limit: int):
        """One page of expiry: see :func:`expire_txn`."""
        return self.db.run("v1_expire", expire_txn, self.rules, now, limit)

    def shift_for_downtime(self, start: float, end: float):
        """See :func:`shift_for_downtime_txn`."""
        return self.db.run("v1_downtime", shift_for_downtime_txn, start, end)
