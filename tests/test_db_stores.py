"""The stores of ``db/`` called directly, on each engine, with a task.Clock: every public method
of every store at least once (the list at the end keeps it so when a method is added)."""

from __future__ import annotations

import hashlib
import inspect

import pytest

from downstream_tx.db import (
    archive,
    challenges,
    contracts,
    files,
    history,
    lease,
    meta,
    overview,
    ratelimits,
    reputation,
    seeded,
    stats,
    status,
    tokens,
)
from downstream_tx.db.files import DuplicateFile
from downstream_tx.db.history import HOUR, HourRow
from downstream_tx.db.seeded import AnswerLost, EncodedChunk, IssuedChallenge, Sealed
from downstream_tx.db.tokens import UnknownToken
from downstream_tx.domain.rules import Rules
from downstream_tx.heartbeat import hashchal
from support import ADDRESS, make_address, run
from support.stored import mark_all_used, overwrite_state, stored_state, v1_deadline

TH = hashlib.sha256(b"token one").digest()
TH2 = hashlib.sha256(b"token two").digest()


def accept(facts):
    return None


@pytest.fixture
def stores(node):
    return node.stores


def add_token(stores, clock, th=TH, address=ADDRESS, ip_hash="ip-a") -> int:
    return run(stores.tokens.create(th, th.hex()[:20], address, ip_hash, clock.seconds(), accept))


def add_file(stores, clock, name: bytes = b"f", redundancy: int = 2) -> tuple[int, str]:
    file_hash = hashlib.sha256(name).hexdigest()
    original = hashlib.sha256(b"original " + name).hexdigest()
    return run(stores.files.add_stored(file_hash, original, 100, None, redundancy, 60, clock.seconds())), file_hash


def add_batch(stores, clock, file_id: int, n: int = 3) -> int:
    seeds = [bytes([i]) * 32 for i in range(n)]
    answers = [hashchal.answer(s, b"data") for s in seeds]
    return run(stores.challenges.add_batch(file_id, b"r" * 32, hashchal.merkle_root(seeds, answers), seeds, answers,
                                           clock.seconds()))


def test_meta_store(stores, clock):
    secret = run(stores.meta.secret(b"n" * 32))
    assert secret and run(stores.meta.secret(b"x" * 32)) == secret  # stored once
    assert run(stores.meta.last_alive()) is None
    run(stores.meta.mark_alive(1234.5))
    assert run(stores.meta.last_alive()) == 1234.5
    snap = run(stores.meta.snapshot())
    assert {"tokens", "files", "contracts", "node_meta"} <= set(snap) and len(snap["node_meta"]) == 2


def test_token_store(stores, clock):
    token_id = add_token(stores, clock)
    add_token(stores, clock, TH2, make_address(2), ip_hash="ip-b")
    row = run(stores.tokens.get(TH))
    assert (row.id, row.address, row.ip_hash, row.hbcount) == (token_id, ADDRESS, "ip-a", 0)
    with pytest.raises(UnknownToken):
        run(stores.tokens.get(b"\0" * 32))
    assert (run(stores.tokens.count()), run(stores.tokens.count("ip-a")), run(stores.tokens.count("ip-z"))) == (2, 1, 0)
    assert run(stores.tokens.heartbeats_total()) == 0
    rows, summary = run(stores.tokens.farmer(TH.hex()[:20]))
    assert [r.id for r in rows] == [token_id] and summary["active"] == 0 and summary["passes"] == 0
    assert run(stores.tokens.farmer("0" * 20)) is None
    assert run(stores.tokens.import_whitelist([(ADDRESS, 5)], False, clock.seconds())) == {
        "added": 1, "updated": 0, "removed": 0}
    assert run(stores.tokens.whitelist_size()) == 1

    def refuse(facts):
        assert (facts.address, facts.balance, facts.by_address, facts.by_ip) == (ADDRESS, 5, 1, 1)
        raise RuntimeError("refused")

    with pytest.raises(RuntimeError):
        run(stores.tokens.create(b"3" * 32, "f" * 20, ADDRESS, "ip-a", clock.seconds(), refuse))
    deleted, ended = run(stores.tokens.delete(TH, clock.seconds()))
    assert (deleted.id, ended) == (token_id, 0)
    with pytest.raises(UnknownToken):
        run(stores.tokens.get(TH))
    assert run(stores.tokens.count()) == 2  # the row is kept, marked deleted


def test_file_store(stores, clock):
    file_id, file_hash = add_file(stores, clock)
    with pytest.raises(DuplicateFile):
        add_file(stores, clock)
    assert run(stores.files.get_active(file_hash)).id == file_id
    assert run(stores.files.get(file_id)).file_hash == file_hash
    assert run(stores.files.replicas(file_hash)) == 0 and run(stores.files.replicas("0" * 64)) is None
    [listed] = run(stores.files.list_active())
    assert (listed["file_hash"], listed["redundancy"], listed["replicas"]) == (file_hash, 2, 0)
    assert run(stores.files.remove(file_id, clock.seconds())) == 0
    assert run(stores.files.get_active(file_hash)) is None and run(stores.files.list_active()) == []
    assert run(stores.files.count()) == 1


def test_challenge_store(stores, clock):
    file_id, _ = add_file(stores, clock)
    batch_id = add_batch(stores, clock, file_id, 3)
    [batch] = run(stores.challenges.batches(file_id))
    assert (batch["id"], batch["count"], batch["root_seed"]) == (batch_id, 3, "72" * 32)
    assert run(stores.challenges.unused(file_id)) == 3
    assert run(stores.challenges.counts()) == {"batches": 1, "unused": 3}
    assert run(stores.challenges.stored(batch_id)) == [(bytes([i]) * 32, hashchal.answer(bytes([i]) * 32, b"data"))
                                                     for i in range(3)]
    assert run(stores.challenges.stored()) == run(stores.challenges.stored(batch_id))
    assert run(stores.challenges.low_files(None, 4)) == [file_id]
    assert run(stores.challenges.low_files([file_id], 3)) == []
    assert run(mark_all_used(stores.challenges.db)) == 3
    assert run(stores.challenges.counts()) == {"batches": 1, "unused": 0}
    # used and no contract points at them: pruned (tests/test_prune.py); the batch's row stays
    pruned = run(stores.challenges.prune((0, 0), 2))
    assert (pruned.deleted, pruned.read, pruned.next[0]) == (2, 2, file_id)  # more of this file may be left
    assert run(stores.challenges.prune(pruned.next, 2)).deleted == 1
    assert run(stores.challenges.stored()) == [] and len(run(stores.challenges.batches(file_id))) == 1


def test_contract_store(stores, clock):
    add_token(stores, clock)
    file_id, file_hash = add_file(stores, clock)
    add_batch(stores, clock, file_id, 4)
    row, assignment = run(stores.contracts.assign(TH, clock.seconds()))
    assert row.address == ADDRESS and assignment.file_hash == file_hash
    assert run(stores.contracts.assign(TH, clock.seconds()))[1] is None  # holds it already
    _, held = run(stores.contracts.of_token(TH))
    assert [c["file_hash"] for c in held] == [file_hash]
    right = hashchal.answer(assignment.challenge, b"data")
    _, result = run(stores.contracts.answer(TH, file_hash, right, clock.seconds(), 3))
    assert result.status == "pass"
    latest = run(stores.contracts.latest(TH, file_hash))
    assert (latest["state"], latest["passes"], latest["protocol"]) == ("active", 1, 0)
    assert run(stores.contracts.latest(TH2, file_hash)) is None
    clock.advance(60)
    tick = run(stores.contracts.issue_due(clock.seconds(), 3, 100, None))
    assert tick.issued == 0 and tick.missed == 0  # answered: its next window is taken when read
    _, [due] = run(stores.contracts.of_token(TH, now=clock.seconds()))
    assert due["challenge"] is not None and not due["answered"] and due["deadline"] == clock.seconds() + 60
    assert run(stores.contracts.fill_starved(clock.seconds())) == 0
    assert run(stores.contracts.end(TH, file_hash, clock.seconds())) is not None
    [c] = run(stores.contracts.all())
    assert (c["file_hash"], c["state"], c["end_reason"], c["passes"]) == (file_hash, "ended", "removed", 1)


def pool_chunks(n: int) -> list[EncodedChunk]:
    return [EncodedChunk(f"{i:032x}", 4096, hashlib.sha256(b"%d" % i).hexdigest(), '{"s": 1}', '{"t": 1}')
            for i in range(n)]


SEALED = Sealed(b"s" * 32, 4, b"r" * 32, b"h" * 32, "1.5")


def issue(chunk):
    return IssuedChallenge(SEALED, '{"c": 1}', 0)


def test_seeded_store(stores, clock):
    add_token(stores, clock)
    assert run(stores.seeded.pool_add(pool_chunks(3), 60, clock.seconds())) == 3
    assert run(stores.seeded.pool_counts()) == {4096: 3}

    made = run(stores.seeded.take_chunks(TH, "ip-a", 0, 8192, clock.seconds(), max_size_per_address=10**9, max_chunks=0,
                                         interval=60, issue=issue))
    ids = [c.id for c in made]
    assert len(ids) == 2 and run(stores.seeded.pool_counts()) == {4096: 1}
    assert run(stored_state(stores.seeded.db, ids[0])) == (0, SEALED, None, None)
    assert run(overwrite_state(stores.seeded.db, ids[0], 0, None, "S", "C")) == 1  # as before schema step 5
    assert run(stored_state(stores.seeded.db, ids[0])) == (0, None, "S", "C")
    assert run(overwrite_state(stores.seeded.db, ids[0], 0, SEALED)) == 1
    deadline = run(v1_deadline(stores.seeded.db, ids[0]))
    assert deadline > clock.seconds() and run(v1_deadline(stores.seeded.db, 10**9)) is None

    t = clock.seconds()
    assert run(stores.seeded.shift_for_downtime(t, t + 10)) == 2
    assert run(v1_deadline(stores.seeded.db, ids[0])) == deadline + 10

    def plan_challenges(wanted, found):
        return sorted(found), []

    assert run(stores.seeded.refresh_challenges(TH, None, plan_challenges)) == ids

    found = run(stores.seeded.contracts(TH, ids + [10**9, 0, -1]))
    assert sorted(found) == ids and found[ids[0]].sealed == SEALED and found[ids[0]].seq == 0
    assert run(stores.seeded.record_answers(TH, "ip-a", 0, {ids[0]: 0}, [ids[1]], clock.seconds())) == (1, [])
    # the same answer again (a retry, a duplicate): recorded once
    assert run(stores.seeded.record_answers(TH, "ip-a", 0, {ids[0]: 0}, [], clock.seconds())) == (
        0, [AnswerLost(ids[0], "answered")])
    # a proof of another challenge than the stored one, or after the expiration, is not recorded
    assert run(stores.seeded.record_answers(TH, "ip-a", 0, {ids[1]: 1}, [], clock.seconds())) == (
        0, [AnswerLost(ids[1], "answered")])
    late = run(v1_deadline(stores.seeded.db, ids[1]))
    assert run(stores.seeded.record_answers(TH, "ip-a", 0, {ids[1]: 0}, [], late)) == (
        0, [AnswerLost(ids[1], "expired")])
    [row] = [c for c in run(stores.contracts.all()) if c["id"] == ids[1]]
    assert (row["passes"], row["fails"]) == (0, 1)
    assert sorted(cid for cid, _ in run(stores.seeded.tags(TH, clock.seconds()))) == ids
    result = run(stores.seeded.expire(run(v1_deadline(stores.seeded.db, ids[0])), 100))
    assert (result.ended, result.failed) == (1, 1)
    states = {c["id"]: (c["state"], c["end_reason"]) for c in run(stores.contracts.all())}
    assert states == {ids[0]: ("ended", "expired"), ids[1]: ("failed", "missed")}
    assert run(stores.seeded.tags(TH, clock.seconds())) == []


def test_status_and_stats_stores(stores, clock):
    add_token(stores, clock)
    assert run(stores.stats.ping()) == 1
    counts = run(stores.stats.counts(clock.seconds(), 10.0))
    assert counts.contracts == {} and counts.farmers_active == 0
    [row] = run(stores.status.farmers(clock.seconds(), False, "id", False, None, 0))
    assert row.farmer_id == TH.hex()[:20] and row.contracts == 0
    assert run(stores.status.farmers(clock.seconds(), True, "id", False, None, 0)) == []
    assert run(stores.status.farmer(TH.hex()[:20], clock.seconds())).address == ADDRESS
    assert run(stores.status.farmer("0" * 20, clock.seconds())) is None
    assert run(stores.status.update_uptime(clock.seconds(), None, True)) >= 0


def test_status_search_by_address(stores, clock):
    add_token(stores, clock)
    add_token(stores, clock, TH2, make_address(2), ip_hash="ip-b")
    found = run(stores.status.farmers(clock.seconds(), False, "id", False, None, 0, ADDRESS[3:12]))
    assert [r.address for r in found] == [ADDRESS]
    assert run(stores.status.farmers(clock.seconds(), False, "id", False, None, 0, ADDRESS[3:12].lower())) == []
    assert len(run(stores.status.farmers(clock.seconds(), False, "id", False, None, 0, ""))) == 2


def test_history_store(stores, clock):
    hour = int(clock.seconds() // HOUR)
    assert run(stores.history.record("a" * 16, [HourRow(hour - 1, 1, 2, 3)])) == 1
    # a source's totals replace its own row; sources add up
    assert run(stores.history.write("b" * 16, [HourRow(hour, 4, 0, 1), HourRow(hour - 1, 1, 0, 0)], hour - 5)) == 2
    assert run(stores.history.write("b" * 16, [HourRow(hour, 5, 0, 1)], hour - 5)) == 1
    assert run(stores.history.hours(hour - 5, hour)) == [HourRow(hour - 1, 2, 2, 3), HourRow(hour, 5, 0, 1)]
    assert run(stores.history.hours(hour, hour)) == [HourRow(hour, 5, 0, 1)]
    assert run(stores.history.write("b" * 16, [], hour)) == 0  # prunes the hours before ``hour``
    assert run(stores.history.hours(hour - 5, hour)) == [HourRow(hour, 5, 0, 1)]


def test_overview_store(stores, clock):
    now = clock.seconds()
    hour = int(now // HOUR)
    run(stores.tokens.create(TH, TH.hex()[:20], ADDRESS, "ip-a", now, accept, location='{"country": "X"}',
                             country="X"))
    add_token(stores, clock, TH2, make_address(2), ip_hash="ip-b")
    file_id, file_hash = add_file(stores, clock, redundancy=2)
    add_batch(stores, clock, file_id, 4)
    run(stores.contracts.assign(TH, now))
    run(stores.history.record("a" * 16, [HourRow(hour, 1, 0, 0), HourRow(hour - 30 * 24, 9, 9, 9)]))
    read = run(stores.overview.overview(now, 10.0, hour - 23, hour))
    assert (read.farmers_total, read.farmers_online, read.counts.farmers_active) == (2, 1, 1)
    assert read.countries == [("X", 1)] and read.counts.contracts == {"active": 1}
    assert read.under_replicated == 1 and [(u.file_hash, u.redundancy, u.replicas) for u in read.under_rows] == [
        (file_hash, 2, 1)]
    assert read.hours == [HourRow(hour, 1, 0, 0)]
    standing = run(stores.overview.farmer(TH.hex()[:20]))
    assert standing.results == {"active": 1, "ended": 0, "failed": 0, "passes": 0, "misses": 0, "fails": 0}
    [risk] = standing.at_risk
    assert (risk.file_hash, risk.protocol, risk.answered, risk.run) == (file_hash, 0, False, 0)
    assert run(stores.overview.farmer(TH2.hex()[:20])).at_risk == []


def test_a_v1_token_moving_to_a_new_address_takes_its_location(stores, clock):
    add_token(stores, clock)
    run(stores.seeded.pool_add(pool_chunks(2), 60, clock.seconds()))

    def take(ip_hash, location):
        return run(stores.seeded.take_chunks(TH, ip_hash, 0, 4096, clock.seconds(), max_size_per_address=10**9,
                                             max_chunks=0, interval=60, issue=issue, location=location))

    take("ip-a", ('{"country": "Z"}', "Z"))  # the same address: nothing moves
    assert run(stores.tokens.get(TH)).location is None
    take("ip-b", ('{"country": "Y"}', "Y"))
    row = run(stores.tokens.get(TH))
    assert (row.ip_hash, row.location) == ("ip-b", '{"country": "Y"}')
    assert run(stores.overview.overview(clock.seconds(), 10.0, 0, 0)).countries == [("Y", 1)]


def test_archive_store(stores, clock):
    """More in tests/test_archive.py (totals across archiving, the job)."""
    token_id = add_token(stores, clock)
    file_id, file_hash = add_file(stores, clock)
    add_batch(stores, clock, file_id)
    run(stores.contracts.assign(TH, clock.seconds()))
    run(stores.contracts.end(TH, file_hash, clock.seconds()))
    assert run(stores.archive.archive(clock.seconds(), 10)).archived == 0  # ended at the cutoff: kept
    clock.advance(1)
    result = run(stores.archive.archive(clock.seconds(), 10))
    assert (result.archived, result.tokens, result.more) == (1, 1, False)
    kept = run(stores.archive.totals([token_id, token_id + 1]))
    assert list(kept) == [token_id] and (kept[token_id].ended, kept[token_id].size) == (1, 100)
    assert run(stores.contracts.all()) == []


def test_reputation_store(stores, clock):
    add_token(stores, clock)
    add_token(stores, clock, TH2, make_address(2), ip_hash="ip-b")
    rep = stores.reputation
    found = run(rep.of_addresses([ADDRESS, make_address(2), make_address(3)]))
    assert sorted(found) == sorted([ADDRESS, make_address(2)])  # a row per address with a token
    assert (found[ADDRESS].audit_alpha, found[ADDRESS].audit_beta, found[ADDRESS].status) == (1000.0, 0.0, "ok")
    assert run(rep.record_errors(TH, 2, clock.seconds())) == ADDRESS
    assert run(rep.record_errors(b"\0" * 32, 1, clock.seconds())) is None
    errors = run(rep.of_addresses([ADDRESS]))[ADDRESS]
    # a new farmer's unknown score starts at its steady state (α = 1 / (1 - 0.98)): two errors, 0.98²
    assert errors.errors == 2 and round(errors.unknown_score, 6) == 0.9604
    assert run(rep.counts()) == {"ok": 2, "suspended": 0, "offline": 0, "disqualified": 0, "contained": 0,
                                 "unvetted": 2}
    assert run(rep.vetting()) == {0: (0.0, 0.0), 1: (0.0, 0.0)}
    # disqualified by hand: the sweep ends its contracts (none here) once, reinstate lifts it
    run(stores.db.run("dq", lambda txn: txn.execute(
        "UPDATE reputation SET status = 'disqualified', pending_end = 1 WHERE address = ?", (ADDRESS,))))
    assert run(rep.sweep(clock.seconds())).ended == {ADDRESS: 0}
    assert run(rep.sweep(clock.seconds())).ended == {}
    assert run(rep.reinstate(ADDRESS, clock.seconds())) == "disqualified"
    assert run(rep.reinstate(make_address(3), clock.seconds())) is None
    assert run(rep.of_addresses([ADDRESS]))[ADDRESS].status_reason == "reinstated by the operator"
def test_lease_acquire_renew_takeover_release(stores, clock):
    t = clock.seconds()
    assert run(stores.leases.state(lease.JOBS)).generation == 0  # made by the schema, held by nobody
    a = run(stores.leases.acquire(lease.JOBS, "a", t, 10))
    assert (a.leader, a.holder, a.generation, a.expires) == (True, "a", 1, t + 10)
    b = run(stores.leases.acquire(lease.JOBS, "b", t + 5, 10))
    assert (b.leader, b.holder, b.generation) == (False, "a", 1)  # a's, unexpired: b only sees it
    renewed = run(stores.leases.acquire(lease.JOBS, "a", t + 6, 10))
    assert (renewed.leader, renewed.generation, renewed.acquired, renewed.expires) == (True, 1, t, t + 16)
    taken = run(stores.leases.acquire(lease.JOBS, "b", t + 16, 10))  # expired: a new term
    assert (taken.leader, taken.holder, taken.generation) == (True, "b", 2)
    assert run(stores.leases.release(lease.JOBS, "a", 1)) is False  # no longer a's
    assert run(stores.leases.release(lease.JOBS, "b", 2)) is True
    again = run(stores.leases.acquire(lease.JOBS, "a", t + 17, 10))  # released: taken at once
    assert (again.leader, again.holder, again.generation) == (True, "a", 3)
    # a holder whose own lease expired starts a new term too (nobody ran the jobs meanwhile)
    assert run(stores.leases.acquire(lease.JOBS, "a", t + 40, 10)).generation == 4
    state = run(stores.leases.state(lease.JOBS))
    assert (state.leader, state.holder, state.generation, state.expires) == (False, "a", 4, t + 50)


def test_lease_fence_rolls_back_a_lost_holders_transaction(stores, clock):
    t = clock.seconds()
    run(stores.leases.acquire(lease.JOBS, "a", t, 10))
    fenced = lease.FencedDatabase(stores.db, lease.Fence(lease.JOBS, "a", 1))
    run(fenced.run("mark", meta.set_txn, "probe", b"1"))  # a holds it: the write happens
    assert run(stores.db.run("get", meta.get_txn, "probe")) == b"1"
    # the fence wrote the lease row (a real change: what Galera certifies against a takeover)
    fences = run(stores.db.run("fences", lambda txn: txn.scalar("SELECT fences FROM leases WHERE name = 'jobs'")))
    assert fences == 1
    clock.advance(11)
    with pytest.raises(lease.LeaseLost, match="generation 1 of a is lost"):  # expired, nobody took it
        run(fenced.run("mark", meta.set_txn, "probe", b"2"))
    run(stores.leases.acquire(lease.JOBS, "b", clock.seconds(), 10))
    with pytest.raises(lease.LeaseLost, match="held by b "):
        run(fenced.run("mark", meta.set_txn, "probe", b"3"))
    assert run(stores.db.run("get", meta.get_txn, "probe")) == b"1"  # neither refused write changed it


def test_every_entry_point_of_the_database_is_fenced_or_refused_on_a_fenced_one(stores, clock):
    """Each public method of Database is either run under the fence (without a term, or once the
    lease is lost, it changes nothing) or refused; nothing else reaches the database unfenced."""
    from downstream_tx.db.database import Database

    public = {name for name, _ in inspect.getmembers(Database, callable) if not name.startswith("_")}
    fenced_db = lease.FencedDatabase
    assert public == set(fenced_db.FENCED) | set(fenced_db.REFUSED)
    fenced = fenced_db(stores.db)
    assert not hasattr(fenced, "pool") and not hasattr(fenced, "note_observers")  # no way around it
    for name in fenced_db.REFUSED:
        with pytest.raises(TypeError, match="fenced database"):
            getattr(fenced, name)()
    t = clock.seconds()
    for name in fenced_db.FENCED:
        entry = getattr(fenced, name)
        fenced.release()
        with pytest.raises(lease.LeaseLost, match="no term"):  # between terms
            run(entry("mark", meta.set_txn, name, b"between"))
        state = run(stores.leases.acquire(lease.JOBS, "a", clock.seconds(), 10))
        fenced.hold(lease.Fence(lease.JOBS, "a", state.generation))
        run(entry("mark", meta.set_txn, name, b"held"))
        clock.advance(11)  # the lease expired
        with pytest.raises(lease.LeaseLost, match="is lost"):
            run(entry("mark", meta.set_txn, name, b"lost"))
        assert run(stores.db.run("get", meta.get_txn, name)) == b"held"
    assert clock.seconds() > t


def test_pool_add_cap_never_overfills(stores, clock):
    def chunk(n, size=100):
        return EncodedChunk(f"{n:032x}", size, hashlib.sha256(b"cap %d" % n).hexdigest(), "{}", "{}")

    assert run(stores.seeded.pool_add([chunk(1), chunk(2), chunk(3)], 60, clock.seconds(), cap=2)) == 2
    assert run(stores.seeded.pool_add([chunk(4), chunk(5, 200)], 60, clock.seconds(), cap=2)) == 1
    assert run(stores.seeded.pool_counts()) == {100: 2, 200: 1}


def test_rate_limit_buckets_in_the_database(stores, clock):
    t = clock.seconds()
    assert [run(stores.ratelimits.take("rate:a", 2, 1 / 30, t)) for _ in range(3)] == [0.0, 0.0, 30.0]
    assert run(stores.ratelimits.take("rate:b", 2, 1 / 30, t)) == 0.0  # another client: its own bucket
    assert run(stores.ratelimits.take("rate:a", 2, 1 / 30, t + 15)) == 15.0  # half a token back
    assert run(stores.ratelimits.take("rate:a", 2, 1 / 30, t + 30)) == 0.0
    assert run(stores.ratelimits.sweep(t + 1)) == 1  # b, untouched since t
    assert run(stores.ratelimits.take("rate:a", 2, 1 / 30, t + 30)) == 30.0  # a's bucket kept


COVERED = {
    archive.ArchiveStore: {"archive", "totals"},
    meta.MetaStore: {"secret", "last_alive", "mark_alive", "snapshot"},
    tokens.TokenStore: {"create", "get", "delete", "farmer", "import_whitelist", "count", "heartbeats_total",
                        "whitelist_size"},
    files.FileStore: {"get_active", "get", "add_stored", "remove", "list_active", "replicas", "count"},
    challenges.ChallengeStore: {"add_batch", "low_files", "batches", "unused", "stored", "counts", "prune"},
    contracts.ContractStore: {"assign", "of_token", "answer", "end", "issue_due", "fill_starved", "latest", "all"},
    seeded.SeededStore: {"pool_counts", "pool_add", "take_chunks", "refresh_challenges", "contracts",
                           "record_answers", "tags", "expire",
                         "shift_for_downtime"},
    status.StatusStore: {"farmers", "farmer", "update_uptime"},
    stats.StatsStore: {"ping", "counts"},
    history.HistoryStore: {"write", "record", "hours"},
    overview.OverviewStore: {"overview", "farmer"},
    reputation.ReputationStore: {"of_addresses", "record_errors", "sweep", "reinstate", "counts", "vetting"},
    lease.LeaseStore: {"acquire", "release", "state"},
    ratelimits.RateLimitStore: {"take", "sweep"},
}


def test_every_store_method_has_a_test_here():
    for cls, covered in COVERED.items():
        public = {name for name, _ in inspect.getmembers(cls, inspect.isfunction) if not name.startswith("_")}
        assert public == covered, (cls.__name__, public ^ covered)


def test_contract_answer_reads_the_token_and_the_contract_in_one_statement(stores, clock):
    """The answer's token and contract come from one SELECT: an unknown token, a known token with
    no contract on the file, a deleted token, a wrong answer, an answer given twice."""
    from downstream_tx.db.tokens import UnknownToken

    add_token(stores, clock)
    file_id, file_hash = add_file(stores, clock)
    add_batch(stores, clock, file_id, 4)
    _, assignment = run(stores.contracts.assign(TH, clock.seconds()))
    now = clock.seconds()
    with pytest.raises(UnknownToken):
        run(stores.contracts.answer(TH2, file_hash, "00" * 32, now, 3))
    row, result = run(stores.contracts.answer(TH, "ee" * 32, "00" * 32, now, 3))
    assert row.address == ADDRESS and result.status == "no_hash"
    row, result = run(stores.contracts.answer(TH, file_hash, "00" * 32, now, 3))
    assert result.status == "fail" and row.address == ADDRESS
    right = hashchal.answer(assignment.challenge, b"data")
    assert run(stores.contracts.answer(TH, file_hash, right, now, 3))[1].status == "not_due"  # one attempt
    latest = run(stores.contracts.latest(TH, file_hash))
    assert (latest["fails"], latest["passes"], latest["run"]) == (1, 0, 1)
    run(stores.tokens.delete(TH, now))
    with pytest.raises(UnknownToken):
        run(stores.contracts.answer(TH, file_hash, right, now, 3))


def test_the_answer_statement_searches_indexes_only_on_sqlite(tmp_path, clock):
    """The one SELECT of an answer: no scan, no materialised join (a parenthesised join of contracts
    and files made SQLite read every active contract per answer)."""
    from downstream_tx.db import contracts
    from downstream_tx.db.tokens import UnknownToken
    from support import make_config, open_test_db, recording_txn

    db = open_test_db(make_config(tmp_path, None), clock)
    seen = []

    def body(txn):
        with pytest.raises(UnknownToken):
            contracts.answer_by_token_txn(recording_txn(txn, seen), Rules(), TH, "ab" * 32, "00" * 32, 0.0,
                                          3)
        [(sql, args)] = seen
        return [row[3] for row in txn.execute("EXPLAIN QUERY PLAN " + sql, args).fetchall()]

    plan = run(db.run("plan", body))
    assert plan and not any("SCAN" in step or "MATERIALIZE" in step for step in plan), plan
    db.close()
