"""The challenge prune (db/challenges.py ``prune_txn``, jobs/prune.py): used v0 challenges no contract
points at any more are deleted in bounded batches; every challenge something still needs is kept
(the current window's, the previous one's for a late answer, a contained contract's retry, a
finished contract's until it is archived). Clock-driven, on SQLite and MariaDB."""

from __future__ import annotations

import re

import pytest

from downstream_tx.db import counters
from downstream_tx.db.challenges import ChallengeStore, prune_txn
from downstream_tx.db.lease import JOBS, Fence, FencedDatabase, LeaseLost
from downstream_tx.jobs.prune import NAME, START, ChallengePrune
from downstream_tx.runtime import build_jobs
from support import ADDRESS, add_test_file, make_address, run
from support.v0_farmer import V0Farmer

INTERVAL = 60
GRACE = 5.0


@pytest.fixture
def make(nodes):
    return nodes


Farmer = V0Farmer


def query(node, sql: str, args=()) -> list[tuple]:
    return run(node.stores.db.run("test_read", lambda txn: [tuple(r) for r in txn.execute(sql, args).fetchall()]))


def used(node) -> set[int]:
    return {r[0] for r in query(node, "SELECT id FROM challenges WHERE used = 1")}


def pointed(node) -> set[int]:
    return {v for r in query(node, "SELECT challenge_id, prev_challenge_id FROM contracts") for v in r
            if v is not None}


def unused(node) -> int:
    return query(node, "SELECT COUNT(*) FROM challenges WHERE used = 0")[0][0]


def prune_all(node, batch: int = 1000):
    """A whole walk, one transaction after another: (deleted, transactions)."""
    store, position, deleted, batches = node.stores.challenges, START, 0, 0
    while position is not None:
        result = run(store.prune(position, batch))
        deleted, position, batches = deleted + result.deleted, result.next, batches + 1
    return deleted, batches


def answered_on_all(node, clock, farmer: Farmer, held: list[str], windows: int) -> None:
    for _ in range(windows):
        for h in held:
            assert farmer.answer(h) == "pass"
        clock.advance(INTERVAL)
        run(node.supply.issue_due())


def holding(node, clock, tmp_path, files: int, windows: int) -> tuple[Farmer, list[str]]:
    """A farmer with a contract on each of ``files`` new files, ``windows`` windows answered on
    each, the next window read (its challenge taken: the answered ones are no one's now)."""
    added = [add_test_file(node, tmp_path, interval=INTERVAL) for _ in range(files)]
    farmer = Farmer(node)
    held = [farmer.chunk() for _ in added]
    answered_on_all(node, clock, farmer, held, windows)
    farmer.outstanding()
    return farmer, held


def test_used_challenges_no_contract_points_at_are_deleted_and_only_those(make, clock, tmp_path):
    node = make()
    farmer, held = holding(node, clock, tmp_path, 3, 4)
    before_used, before_unused = used(node), unused(node)
    assert len(before_used) == 3 * 5 and pointed(node) < before_used
    deleted, _ = prune_all(node)
    assert deleted == len(before_used - pointed(node)) == 3 * 4
    assert used(node) == pointed(node)  # every challenge a contract points at, nothing else
    assert unused(node) == before_unused  # the pool of unused challenges is untouched
    assert run(node.stores.challenges.counts())["batches"] == 3
    for h in held:  # the farmer carries on
        assert farmer.answer(h) == "pass"


def test_the_previous_windows_challenge_is_kept_and_a_late_answer_after_a_prune_passes(make, clock, tmp_path):
    node = make(late_grace=GRACE)
    farmer, [h] = holding(node, clock, tmp_path, 1, 3)
    first = farmer.outstanding()[h]
    arrived = clock.seconds() + INTERVAL - 1  # the request arrives a second before the deadline …
    clock.advance(INTERVAL + 2)  # … and is processed after the timer turned the window (a miss)
    assert run(node.supply.issue_due()).missed == 1
    row = query(node, "SELECT challenge_id, prev_challenge_id FROM contracts")[0]
    assert None not in row
    deleted, _ = prune_all(node)
    assert deleted == 3  # the three answered windows' challenges
    assert used(node) == set(row)  # the current window's and the previous one's are kept
    assert farmer.answer(h, first, arrived) == "pass"  # judged against the kept previous challenge
    state = farmer.state(h)
    assert (state["passes"], state["misses"], state["run"]) == (4, 0, 0)
    prune_all(node)  # judged: nothing points at it any more
    assert used(node) == pointed(node) == {row[0]}
    assert farmer.answer(h) == "pass"  # the current one, kept all along


def test_a_late_pass_within_the_grace_after_a_prune(make, clock, tmp_path):
    node = make(late_grace=GRACE)
    farmer, [h] = holding(node, clock, tmp_path, 1, 0)
    first = farmer.outstanding()[h]
    clock.advance(INTERVAL + 1)
    run(node.supply.issue_due())
    prune_all(node)
    assert farmer.answer(h, first) == "late_pass"


def test_a_contained_contracts_retry_is_kept(make, clock, tmp_path):
    node = make(containment_retries=3)
    farmer, [h] = holding(node, clock, tmp_path, 1, 2)
    asked = farmer.outstanding()[h]
    for _ in range(2):  # offline over two deadlines: asked the same challenge again
        clock.advance(INTERVAL)
        assert run(node.supply.issue_due()).contained == 1
        assert prune_all(node)[0] == (2 if _ == 0 else 0)
        assert farmer.outstanding() == {h: asked}
    assert farmer.answer(h) == "pass"  # the retry passes and ends the containment
    assert run(node.stores.reputation.of_addresses([ADDRESS]))[ADDRESS].contained == 0


def test_a_finished_contract_keeps_its_challenge_until_it_is_archived(make, clock, tmp_path):
    node = make(contract_retention=1000)
    farmer, [h] = holding(node, clock, tmp_path, 1, 2)
    run(node.v0.end_contract(farmer.token, h))
    [(last,)] = query(node, "SELECT challenge_id FROM contracts WHERE state = 'ended'")
    assert prune_all(node)[0] == 2
    assert used(node) == {last}  # the ended contract's row still points at it
    clock.advance(1001)
    from downstream_tx.jobs.archive import archive_pass
    assert run(archive_pass(node.stores.archive, node.config, clock.seconds())).archived == 1
    assert prune_all(node)[0] == 1 and used(node) == set()


def test_batches_are_bounded_and_the_walk_goes_on_inside_a_file(make, clock, tmp_path):
    node = make()
    holding(node, clock, tmp_path, 2, 5)
    garbage = used(node) - pointed(node)
    assert len(garbage) == 10
    store = node.stores.challenges
    first = run(store.prune(START, 3))
    assert (first.deleted, first.read) == (3, 3) and first.next[0] == min(
        r[0] for r in query(node, "SELECT id FROM files"))
    assert len(used(node) - pointed(node)) == 7
    # a transaction looks at a bounded number of files too: one file at a time
    position, seen = START, []
    while position is not None:
        result = run(store.prune(position, 2, files=1))
        assert result.deleted <= 2 and result.read <= 2 and result.files <= 1
        seen.append(result.deleted)
        position = result.next
    assert sum(seen) == 7 and len(seen) >= 4
    assert used(node) == pointed(node)


def test_a_pass_is_idempotent_and_stops_at_prune_batches(make, clock, tmp_path):
    node = make(prune_batch=2, prune_batches=3)
    holding(node, clock, tmp_path, 1, 9)
    job = ChallengePrune(node.stores.challenges, node.config)
    first = run(job())
    assert (first.deleted, first.batches, first.more) == (6, 3, True)
    assert "deleted 6 used challenges in 3 batches (more waiting)" == first.describe()
    second = run(job())  # goes on where the first stopped, reaches the last file
    assert (second.deleted, second.more) == (3, False) and second.batches <= 3
    assert used(node) == pointed(node)
    snapshot = query(node, "SELECT id, used FROM challenges ORDER BY id")
    again = run(job())
    assert (again.deleted, again.describe()) == (0, "")
    assert query(node, "SELECT id, used FROM challenges ORDER BY id") == snapshot


def test_a_pass_without_the_lease_deletes_nothing(make, clock, tmp_path):
    node = make()
    holding(node, clock, tmp_path, 1, 3)
    before = used(node)
    fenced = FencedDatabase(node.stores.db)
    store = ChallengeStore(fenced)
    with pytest.raises(LeaseLost):  # no term held
        run(store.prune(START, 100))
    fenced.hold(Fence(JOBS, "someone-else", 7))  # a stale or foreign term
    with pytest.raises(LeaseLost):
        run(ChallengePrune(store, node.config)())
    assert used(node) == before and len(before - pointed(node)) == 3


def test_the_kept_counters_and_the_challenge_counts_stay_right(make, clock, tmp_path):
    node = make()
    for _ in range(2):
        add_test_file(node, tmp_path, interval=INTERVAL)
    farmers = [Farmer(node, make_address(i)) for i in range(2)]
    for f in farmers:
        f.chunk()
    for _ in range(3):
        for h in farmers[0].outstanding():
            farmers[0].answer(h)
        clock.advance(INTERVAL)
        run(node.supply.issue_due())

    def counts():
        kept = run(node.stores.db.run("counters", counters.read_txn))
        recounted = run(node.stores.db.run("recount", counters.recount_txn))
        listed = [(f["file_hash"], f["unused_challenges"]) for f in run(node.stores.files.list_active())]
        return kept, recounted, run(node.stores.challenges.counts()), listed
    before = counts()
    assert before[0] == before[1]
    assert prune_all(node)[0] > 0
    assert counts() == before


def test_the_job_runs_with_the_others_and_is_off_at_zero(make, clock, tmp_path):
    node = make(prune_interval=30)
    [job] = [j for j in build_jobs(node) if j.name == NAME]
    assert job.interval == 30
    holding(node, clock, tmp_path, 1, 2)
    run(job.run_now())
    assert job.last_result.deleted == 2 and used(node) == pointed(node)
    assert NAME not in [j.name for j in build_jobs(make(prune_interval=0))]


def test_without_the_prune_used_challenges_pile_up(make, clock, tmp_path):
    """What the job is for: one used challenge per contract per window stays for ever otherwise."""
    node = make(prune_interval=0)
    holding(node, clock, tmp_path, 1, 4)
    for job in build_jobs(node):
        run(job.run_now())
    assert len(used(node) - pointed(node)) == 4


def test_the_statements_search_indexes_only(tmp_path):
    """On SQLite: every statement of a prune transaction is a search of an index (files by primary
    key, challenges by ``challenges_unused``, contracts by ``contracts_file``), never a scan."""
    from support import make_config, make_node, recording_txn

    node = make_node(make_config(tmp_path, "sqlite:///" + str(tmp_path / "plan.db")))
    try:
        add_test_file(node, tmp_path, interval=INTERVAL)
        Farmer(node).chunk()
        run(node.stores.db.run("used", lambda txn: txn.execute("UPDATE challenges SET used = 1 WHERE seq < 3")))
        seen = []

        def body(txn):
            prune_txn(recording_txn(txn, seen), START, 10)
            return {sql: [row[3] for row in txn.execute("EXPLAIN QUERY PLAN " + sql, args).fetchall()]
                    for sql, args in seen}

        plans = run(node.stores.db.run("plan", body))
    finally:
        node.db.close()
    assert len(plans) == 4, plans  # files, challenges, contracts, the delete
    for sql, plan in plans.items():
        assert plan and all(re.match(r"SEARCH ", step) or step.startswith("USE TEMP B-TREE") for step in plan), \
            (sql, plan)
