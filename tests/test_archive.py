"""Contract archiving (db/archive.py, jobs/archive.py): finished contracts older than
``contract_retention`` leave the contracts table in bounded batches, and every total shown per
farmer stays the same. Clock-driven, on SQLite and MariaDB."""

from __future__ import annotations

import hashlib

import orjson
import pytest

from downstream_tx.config import overdue_grace
from downstream_tx.db.archive import Totals, latest
from downstream_tx.jobs.archive import ArchivePass, archive_job, archive_pass
from downstream_tx.runtime import build_jobs
from downstream_tx.v0.hashes import parse_response
from support import ADDRESS, add_test_file, make_address, report_of, run, stored_bytes, v0_answer
from support.v1 import prove

RETENTION = 1000
INTERVAL = 60
IP = "10.1.2.3"


@pytest.fixture
def node(seeded_nodes):
    return seeded_nodes(contract_retention=RETENTION, max_failures=2, archive_batch=7, archive_batches=2)


def farmer_id(token: str) -> str:
    return hashlib.sha256(bytes.fromhex(token)).hexdigest()[:20]


def v0_history(node, tmp_path, clock, address=ADDRESS) -> str:
    """A v0 farmer with every kind of contract: passed and removed (ended), failed after misses,
    failed after wrong answers, and one still active with a pass."""
    token = run(node.v0.create_token(address))
    files = [add_test_file(node, tmp_path, redundancy=3, interval=INTERVAL) for _ in range(4)]
    for _ in range(3):  # three removed contracts on one file, each with a pass
        a = run(node.v0.get_chunk(token))
        right = v0_answer(stored_bytes(node, a.file_hash), a.challenge)
        assert run(node.v0.answer(token, a.file_hash, parse_response(right))) == "pass"
        run(node.v0.end_contract(token, a.file_hash))
    held = [run(node.v0.get_chunk(token)).file_hash for _ in files]  # one contract on every file
    assert sorted(held) == sorted(files)
    # wrong answers on the first held file: fails it (max_failures 2) over two windows
    assert run(node.v0.answer(token, held[0], parse_response("0" * 64))) == "fail"
    # a right answer on the last one
    last = held[-1]
    _, due = run(node.v0.due(token))
    challenge = {r["file_hash"]: r["challenge"] for r in due}[last]
    assert run(node.v0.answer(token, last, parse_response(v0_answer(stored_bytes(node, last), challenge)))) == "pass"
    clock.advance(INTERVAL)
    run(node.supply.issue_due())  # the others miss once
    _, due = run(node.v0.due(token))
    for r in due:
        if r["file_hash"] == held[0]:
            run(node.v0.answer(token, held[0], parse_response("0" * 64)))  # second fail: the contract fails
    clock.advance(INTERVAL)
    run(node.supply.issue_due())  # second miss: those contracts fail
    return token


def v1_history(node, clock) -> str:
    """A v1 farmer with an answered contract that ends and an unanswered one that fails."""
    token = run(node.v1.new_token(make_address(3), IP))["token"]
    a, b = orjson.loads(orjson.dumps(run(node.v1.chunks(token, IP, 8192))))
    assert report_of(node.v1.answer(token, IP, [{"file_hash": a["file_hash"], "proof": prove(a)}]))[0]["status"] == "ok"
    return token


def totals(node, tokens: list[str]) -> dict:
    """Every total a farmer is shown: admin farmer list/show, the status API, the dashboard, the
    metrics' contract counts."""
    stores, now = node.stores, node.clock.seconds()
    ids = [farmer_id(t) for t in tokens]
    out = {
        "list": [f.as_dict() for f in run(node.farmers.page())],
        "summaries": [f.as_dict() for f in run(node.farmers.summaries(ids))],
        "show": [run(node.farmers.show(i)) for i in ids],
        "status": [run(stores.status.farmer(i, now)) for i in ids],
        "status_list": run(stores.status.farmers(now, False, "id", False, None, 0)),
        "dashboard": [run(stores.overview.farmer(i)).results for i in ids],
        "counts": run(stores.stats.counts(now, overdue_grace(node.config))).contracts,
        # the status API service: archived totals and the farmer's reputation fields side by side
        "status_api": [run(node.status.farmer(i)) for i in ids],
        "status_api_list": run(node.status.farmers()),
        # the reputation is a running tally of its own (db/reputation.py): archiving leaves it
        "reputation": {a: vars(r) for a, r in run(stores.reputation.of_addresses(
            sorted({s["address"] for s in out_show(node, ids)}))).items()},
    }
    return out


def out_show(node, ids: list[str]) -> list[dict]:
    return [run(node.farmers.show(i)) for i in ids]


def contracts(node) -> list[dict]:
    return run(node.stores.contracts.all())


def test_archiving_keeps_every_total_and_never_touches_active_contracts(node, tmp_path, clock):
    v0 = v0_history(node, tmp_path, clock)
    v1 = v1_history(node, clock)
    clock.advance(4 * INTERVAL)
    run(node.expiry.expire())  # the v1 contracts end (answered) and fail (unanswered)
    clock.advance(RETENTION)
    before = contracts(node)
    states = sorted({c["state"] for c in before})
    assert states == ["active", "ended", "failed"], states
    finished = [c for c in before if c["state"] != "active"]
    active = [c for c in before if c["state"] == "active"]
    assert len(finished) >= 8 and active
    shown = totals(node, [v0, v1])
    assert any(s["contracts"]["passes"] for s in shown["show"])
    assert all("audit_score" in f and f["contracts"] for f in shown["status_api"])
    assert any(r["passes"] for r in shown["reputation"].values())
    done = run(archive_pass(node.stores.archive, node.config, clock.seconds()))
    assert done.archived == 7 * 2 or done.archived == len(finished)
    while done.archived:
        done = run(archive_pass(node.stores.archive, node.config, clock.seconds()))
    assert contracts(node) == active  # only the active ones are left, untouched
    assert totals(node, [v0, v1]) == shown
    # idempotent: nothing more to do, nothing changes
    assert run(archive_pass(node.stores.archive, node.config, clock.seconds())).archived == 0
    assert totals(node, [v0, v1]) == shown


def test_a_batch_archives_at_most_its_limit_and_only_what_is_older_than_the_cutoff(node, tmp_path, clock):
    token = run(node.v0.create_token(ADDRESS))
    add_test_file(node, tmp_path, redundancy=1, interval=INTERVAL)
    for _ in range(12):
        a = run(node.v0.get_chunk(token))
        run(node.v0.end_contract(token, a.file_hash))
        clock.advance(1)
    ended = [c for c in contracts(node) if c["state"] == "ended"]
    assert len(ended) == 12
    store = node.stores.archive
    cutoff = clock.seconds() - 2  # the last two ended after it
    first = run(store.archive(cutoff, 4))
    assert (first.archived, first.tokens, first.more) == (4, 1, True)
    assert len(contracts(node)) == 8
    second = run(store.archive(cutoff, 100))
    assert (second.archived, second.more) == (6, False)
    assert len(contracts(node)) == 2
    [(token_id, kept)] = run(store.totals([run(node.stores.tokens.farmer(farmer_id(token)))[0][0].id])).items()
    assert (kept.ended, kept.failed, kept.contracts, kept.v0, kept.v1) == (10, 0, 10, 1, 0)
    assert kept.size == 10 * 4096


def test_the_job_runs_bounded_batches_per_pass_and_does_nothing_with_retention_zero(seeded_nodes, tmp_path, clock):
    node = seeded_nodes(contract_retention=RETENTION, archive_batch=3, archive_batches=2)
    token = run(node.v0.create_token(ADDRESS))
    add_test_file(node, tmp_path, redundancy=1, interval=INTERVAL)
    for _ in range(10):
        a = run(node.v0.get_chunk(token))
        run(node.v0.end_contract(token, a.file_hash))
    clock.advance(RETENTION + 1)
    [job] = [j for j in build_jobs(node) if j.name == "archive"]
    assert job.interval == node.config.archive_interval
    job.startService()  # the first pass runs at once
    try:
        assert job.last_result == ArchivePass(archived=6, batches=2, more=True)
        assert job.last_result.describe() == "archived 6 finished contracts in 2 batches (more waiting)"
        clock.advance(node.config.archive_interval)
        assert job.last_result == ArchivePass(archived=4, batches=2, more=False)
        clock.advance(node.config.archive_interval)
        assert job.last_result == ArchivePass(batches=1) and job.last_result.describe() == ""
    finally:
        job.stopService()
    kept = node.config.replace(contract_retention=0)
    assert run(archive_pass(node.stores.archive, kept, clock.seconds())) == ArchivePass()
    assert archive_job(node.stores.archive, kept, clock).name == "archive"


def test_totals_merge_and_latest():
    t = Totals()
    t.merge([1, 2, 3, 4, 5, 6, 7, 2, 0, 1, 1, 0, 10.0, None, 30.0])
    t.merge([1, 0, 0, 0, 0, 0, 1, 1, 1, 0, 0, 1, 5.0, 20.0, None])
    assert (t.ended, t.failed, t.passes, t.size, t.v0, t.v1) == (2, 2, 3, 8, 1, 1)
    assert (t.downloads, t.redownloads, t.downloads_refused) == (3, 1, 1)
    assert (t.last_start, t.last_answered, t.last_due, t.contracts) == (10.0, 20.0, 30.0, 4)
    assert latest(None, 3.0, 2.0) == 3.0 and latest(None, None) is None


def test_a_batch_retried_after_a_failure_counts_each_contract_once(node, tmp_path, clock):
    """The batch's transaction fails after its work (a deadlock, a lost connection) and the
    database wrapper retries it: it was rolled back whole, so the retry counts every contract once."""
    import sqlite3

    import pymysql

    from downstream_tx.db.archive import archive_txn

    token = run(node.v0.create_token(ADDRESS))
    add_test_file(node, tmp_path, redundancy=1, interval=INTERVAL)
    for _ in range(5):
        a = run(node.v0.get_chunk(token))
        run(node.v0.end_contract(token, a.file_hash))
    clock.advance(RETENTION + 1)
    attempts = []

    def flaky(txn, before, limit):
        result = archive_txn(txn, before, limit)
        attempts.append(result.archived)
        if len(attempts) == 1:
            if node.db.engine.name == "sqlite":
                raise sqlite3.OperationalError("database is locked")
            raise pymysql.err.OperationalError(1213, "Deadlock found when trying to get lock")
        return result

    d = node.db.run("archive_contracts", flaky, clock.seconds() - RETENTION, 100)
    clock.advance(1)  # the wrapper's back-off before the retry
    result = run(d)
    assert attempts == [5, 5] and result.archived == 5
    token_id = run(node.stores.tokens.farmer(farmer_id(token)))[0][0].id
    assert run(node.stores.archive.totals([token_id]))[token_id].ended == 5
    assert run(node.farmers.show(farmer_id(token)))["contracts"]["ended"] == 5


def test_archiving_a_v1_contract_ended_with_its_token_drops_its_tag(node, clock):
    token = v1_history(node, clock)
    assert run(node.farmers.delete_token(token)) == 2  # both contracts end, their tags stay
    tags = "SELECT COUNT(*) FROM contract_tags"
    assert run(node.db.run("tags", lambda txn: txn.scalar(tags))) == 2
    clock.advance(RETENTION + 1)
    assert run(node.stores.archive.archive(clock.seconds() - RETENTION, 10)).archived == 2
    assert run(node.db.run("tags", lambda txn: txn.scalar(tags))) == 0
