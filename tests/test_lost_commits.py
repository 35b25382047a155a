"""A COMMIT whose acknowledgement is lost is never re-run blindly (``Database.run``): the mechanism
on both engines (SQLite as if its commits could be lost: ``support.lost_commits``), the engines'
classification of commit errors, the fenced job transactions, the purge.

Each store entry point a farmer calls is in tests/test_lost_commits_api.py; the daemon under
connection kills in tests/test_db_kills.py."""

from __future__ import annotations

import os
import sqlite3

import pymysql
import pytest
from twisted.enterprise.adbapi import ConnectionLost

from downstream_tx.db import database, lease, outcomes
from downstream_tx.db.database import DatabaseUnavailable
from downstream_tx.db.engine import create_engine
from downstream_tx.jobs.outcomes import purge_pass
from downstream_tx.metrics import Metrics
from support import run
from support.lost_commits import faulty_db, settle

OUTCOMES = "SELECT id, attempt FROM txn_outcomes ORDER BY id"


@pytest.fixture
def lossy(tmp_path, db_url, clock):
    """``(db, faults)``: a database whose commits can be made to fail (``CommitFaults``)."""
    db, faults = faulty_db(db_url, clock)
    yield db, faults
    db.close()


class Body:
    """A transaction body that adds one token per run and returns which run it was."""

    def __init__(self):
        self.runs = 0

    def __call__(self, txn):
        self.runs += 1
        txn.execute("INSERT INTO tokens (token_hash, farmer_id, address, created) VALUES (?, 'f', 'a', 0)",
                    (os.urandom(32),))
        return f"run {self.runs}"


def tokens(db) -> int:
    return run(db.run("count", lambda txn: txn.scalar("SELECT COUNT(*) FROM tokens")))


def kept(db) -> list[tuple[bytes, int]]:
    return [(bytes(i), int(a)) for i, a in run(db.run("outcomes", lambda txn: txn.execute(OUTCOMES).fetchall()))]


def test_a_write_transaction_commits_its_id_with_it_and_a_read_or_schema_change_does_not(lossy):
    db, _ = lossy
    assert kept(db) == []  # the schema's creation is not recorded
    assert run(db.run("write", Body())) == "run 1"
    (txn_id, attempt), = kept(db)
    assert attempt == 0 and len(txn_id) == 16
    assert int.from_bytes(txn_id[:8], "big") == int(db.clock.seconds() * 1000)
    assert run(db.run("read", lambda txn: txn.scalar("SELECT COUNT(*) FROM tokens"))) == 1
    assert len(kept(db)) == 1


def test_an_acknowledgement_lost_after_the_commit_returns_the_committed_result(lossy):
    """The server committed; the connection died before the acknowledgement: the retry finds the
    transaction's id and returns what that attempt computed, without running the body again."""
    db, faults = lossy
    body = Body()
    faults.arm("after")
    assert settle(db.run("add", body), db.clock) == "run 1"
    assert faults.injected == [(1, "after")]
    assert body.runs == 1 and tokens(db) == 1
    assert db.lost_commits == {"committed": 1, "rolled_back": 0, "unknown": 0}
    metrics = Metrics(db.clock)
    metrics.bind_db(db, 1)
    assert 'downstream_db_lost_commits_total{outcome="committed"} 1.0' in metrics.render().decode()


def test_a_connection_lost_before_the_commit_reached_the_server_runs_the_body_again(lossy):
    db, faults = lossy
    body = Body()
    faults.arm("before")
    assert settle(db.run("add", body), db.clock) == "run 2"
    assert body.runs == 2 and tokens(db) == 1
    assert [a for _, a in kept(db)] == [1]
    assert db.lost_commits == {"committed": 0, "rolled_back": 1, "unknown": 0}


@pytest.mark.parametrize("mode, committed", [("after", "run 1"), ("before", "run 2")])
def test_calls_after_commit_are_those_of_the_attempt_that_committed_once(lossy, mode, committed):
    """``Txn.call_after``: an attempt rolled back calls nothing; the one that committed calls once,
    also when its commit was found by the lookup."""
    db, faults = lossy
    body, calls = Body(), []

    def with_call(txn):
        result = body(txn)
        txn.call_after(calls.append, result)
        return result

    faults.arm(mode)
    assert settle(db.run("add", with_call), db.clock) == committed
    assert calls == [committed]


def test_a_commit_the_server_refused_is_run_again_without_a_lookup(lossy):
    """A deadlock or a Galera certification failure at COMMIT: rolled back, known; re-run at once."""
    db, faults = lossy
    body = Body()
    faults.arm("refused")
    assert settle(db.run("add", body), db.clock) == "run 2"
    assert body.runs == 2 and tokens(db) == 1
    assert db.lost_commits == {"committed": 0, "rolled_back": 0, "unknown": 0}


@pytest.mark.parametrize("modes, result, runs", [
    (("before", "after"), "run 2", 2),  # the second attempt committed, its acknowledgement lost too
    (("before", "refused", "after"), "run 3", 3),
    (("after", "after"), "run 1", 1),  # the lookup transaction writes nothing: never a write commit
    (("refused", "after"), "run 2", 2),
])
def test_faults_in_a_row_end_with_the_attempt_that_committed(lossy, modes, result, runs):
    db, faults = lossy
    body = Body()
    faults.arm(*modes)
    assert settle(db.run("add", body), db.clock) == result
    assert body.runs == runs and tokens(db) == 1


def test_a_read_only_transaction_is_simply_run_again(lossy):
    """Nothing written, nothing recorded: a lost commit of a read is harmless to repeat."""
    db, faults = lossy
    reads = []

    def read(txn):
        reads.append(1)
        return txn.scalar("SELECT COUNT(*) FROM tokens")

    faults.arm("after")
    assert settle(db.run("read", read), db.clock) == 0
    assert faults.injected == [] and len(reads) == 1  # a read's commit is not a write commit
    assert kept(db) == []


def test_retries_used_up_with_the_outcome_unknown_ask_the_database_once_more(tmp_path, db_url, clock):
    """The last attempt's acknowledgement is lost too: a lookup of its own says what happened. A
    commit that happened is the answer; none is a plain 503 (nothing was written)."""
    db, faults = faulty_db(db_url, clock, retries=1)
    try:
        body = Body()
        faults.arm("before", "after")
        assert settle(db.run("add", body), clock) == "run 2"
        assert body.runs == 2 and tokens(db) == 1
        body = Body()
        faults.arm("before", "before")
        with pytest.raises(DatabaseUnavailable):
            settle(db.run("add", body), clock)
        assert body.runs == 2 and tokens(db) == 1
        assert db.lost_commits == {"committed": 1, "rolled_back": 1, "unknown": 0}
    finally:
        db.close()


def test_the_outcome_is_unknown_when_the_lookup_cannot_reach_the_database(lossy, monkeypatch):
    db, faults = lossy
    db.retries = 0
    lost = faults.lost()

    def unreachable(cursor, txn_id):
        raise lost

    monkeypatch.setattr(db, "_lookup", unreachable)
    faults.arm("after")
    with pytest.raises(DatabaseUnavailable, match="the outcome of its commit is unknown"):
        settle(db.run("add", Body()), db.clock)
    assert db.lost_commits["unknown"] == 1


def test_a_refusal_after_a_lost_commit_that_happened_is_not_what_the_client_is_told(lossy):
    """The body refuses on its second run only because its first run committed (e.g. a limit the
    first token reached): the lookup comes first, so the committed result stands."""
    db, faults = lossy
    runs = []

    def add_once(txn):
        runs.append(1)
        if txn.scalar("SELECT COUNT(*) FROM tokens"):
            raise ValueError("limit reached")
        return Body()(txn)

    faults.arm("after")
    assert settle(db.run("add", add_once), db.clock) == "run 1"
    assert len(runs) == 1


def test_an_earlier_attempt_that_commits_late_wins_over_the_retry(lossy, monkeypatch, tmp_path):
    """On a Galera cluster the lost attempt's commit may still be under way on another node when the
    retry looks (and finds nothing). The retry's id then collides with it (a duplicate key here; a
    certification failure on Galera): the retry rolls back and the earlier result stands."""
    db, faults = lossy
    fixed = b"\x00" * 8 + b"late-commit-id!!"[:8]
    monkeypatch.setattr(database, "outcome_id", lambda now: fixed)
    other = db.engine.connect()
    body = Body()

    def late(txn):
        if body.runs == 1:  # the retry, after its lookup: attempt 0's commit lands now
            cursor = other.cursor()
            try:
                cursor.execute(db.engine.convert("INSERT INTO tokens (token_hash, farmer_id, address, created) "
                                                 "VALUES (?, 'f', 'a', 0)"), (bytes([1]) * 32,))
                cursor.execute(db.engine.convert("INSERT INTO txn_outcomes (id, attempt) VALUES (?, 0)"), (fixed,))
            finally:
                cursor.close()
            other.commit()
        return body(txn)

    faults.arm("before")
    try:
        assert settle(db.run("add", late), db.clock) == "run 1"
    finally:
        other.close()
    assert body.runs == 2 and tokens(db) == 1 and kept(db) == [(fixed, 0)]
    assert db.lost_commits["committed"] == 1


# --- jobs under the lease ---------------------------------------------------------------------------

def test_a_fenced_job_transaction_whose_acknowledgement_is_lost_counts_once(lossy):
    """A job transaction (fenced by the lease: db/lease.py) committed and its acknowledgement lost:
    the committed result stands, the lease row's fence count says one transaction."""
    db, faults = lossy
    state = run(lease.LeaseStore(db).acquire(lease.JOBS, "a", db.clock.seconds(), 30))
    fenced = lease.FencedDatabase(db, lease.Fence(lease.JOBS, "a", state.generation))
    fences = "SELECT fences FROM leases WHERE name = 'jobs'"
    before = run(db.run("fences", lambda txn: txn.scalar(fences)))
    body = Body()
    faults.arm("after")
    assert settle(fenced.run("job", body), db.clock) == "run 1"
    assert body.runs == 1 and tokens(db) == 1
    assert run(db.run("fences", lambda txn: txn.scalar(fences))) == before + 1


def test_a_fenced_transaction_retried_after_the_lease_moved_changes_nothing(lossy):
    """Its commit never happened, and before the retry another instance took the lease: the retry
    finds nothing committed, runs again, and the fence refuses it."""
    db, faults = lossy
    clock = db.clock
    state = run(lease.LeaseStore(db).acquire(lease.JOBS, "a", clock.seconds(), 30))
    fenced = lease.FencedDatabase(db, lease.Fence(lease.JOBS, "a", state.generation))
    body = Body()
    faults.arm("before")
    d = fenced.run("job", body)
    clock.advance(31)  # the lease expires before the retry's back-off is over
    run(lease.LeaseStore(db).acquire(lease.JOBS, "b", clock.seconds(), 30))
    with pytest.raises(lease.LeaseLost):
        settle(d, clock)
    assert tokens(db) == 0


# --- the engines ------------------------------------------------------------------------------------

def test_only_a_server_engine_has_commits_that_can_be_lost():
    sqlite = create_engine("sqlite:///x.db")
    assert not sqlite.commit_can_be_lost
    assert not sqlite.commit_outcome_unknown(sqlite3.OperationalError("disk I/O error"))
    mysql = create_engine("mysql://u:p@h/d")
    assert mysql.commit_can_be_lost
    err = pymysql.err
    for unknown in (err.OperationalError(2013, "Lost connection to MySQL server during query"),
                    err.OperationalError(2006, "MySQL server has gone away"),
                    err.OperationalError(1927, "Connection was killed"),
                    err.OperationalError(1053, "Server shutdown in progress"),
                    err.InterfaceError(0, ""), ConnectionLost(), ConnectionResetError()):
        assert mysql.commit_outcome_unknown(unknown), unknown
    for known in (err.OperationalError(1213, "Deadlock found"), err.OperationalError(1205, "Lock wait timeout"),
                  err.OperationalError(1047, "WSREP has not yet prepared node for application use"),
                  err.IntegrityError(1062, "Duplicate entry")):
        assert not mysql.commit_outcome_unknown(known), known


def test_the_database_records_only_where_commits_can_be_lost(tmp_path, db_url, clock):
    from support import make_config, open_test_db

    db = open_test_db(make_config(tmp_path, db_url), clock)
    try:
        assert db.record_outcomes == (db.engine.name == "mysql")
        run(db.run("add", Body()))
        assert len(kept(db)) == (1 if db.engine.name == "mysql" else 0)
    finally:
        db.close()


# --- the purge --------------------------------------------------------------------------------------

def test_ids_older_than_the_keep_time_are_purged_in_batches(lossy):
    db, _ = lossy
    clock = db.clock
    for _ in range(7):
        run(db.run("add", Body()))
        clock.advance(1)
    clock.advance(outcomes.KEEP - 3)  # the first four are older than KEEP, the last three younger
    store = outcomes.OutcomeStore(db)
    assert run(store.count()) == 7
    done = run(purge_pass(store, clock.seconds(), batch=2, batches=1))
    assert (done.deleted, done.more) == (2, True)
    done = run(purge_pass(store, clock.seconds(), batch=2, batches=10))
    assert (done.deleted, done.batches, done.more) == (2, 2, False)
    assert done.describe() == "purged 2 transaction ids"
    floor = outcomes.id_floor(clock.seconds() - outcomes.KEEP)
    # the three young ones are kept, and the ids of the purge's own three transactions
    assert len(kept(db)) == 6 and all(txn_id >= floor for txn_id, _ in kept(db))
    assert run(purge_pass(store, clock.seconds())).describe() == ""


def test_the_purge_job_runs_under_the_lease(node):
    from downstream_tx.runtime import build_jobs

    [job] = [j for j in build_jobs(node) if j.name == "txn_outcomes"]
    assert job.interval == 30.0

