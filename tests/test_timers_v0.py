"""Clock-driven tests of every v0 timing rule, on SQLite and MariaDB.

Time comes only from ``task.Clock``; a "pass" is one run of ``node.supply.issue_due()`` (what the
challenge job does every tick) or of the job itself.
"""

from __future__ import annotations

from dataclasses import asdict

import pytest

from downstream_tx.errors import NodeError
from downstream_tx.runtime import build_jobs, contract_timer
from support import (
    add_test_file,
    file_replicas,
    make_address,
    run,
)
from support.stored import mark_all_used
from support.v0_farmer import V0Farmer

INTERVAL = 60
EPS = 0.001


@pytest.fixture
def make(nodes):
    return nodes


class Farmer(V0Farmer):
    def answer_stale(self, file_hash: str, challenge: str) -> str:
        return self.answer(file_hash, challenge)


def tick(node, clock, seconds: float = INTERVAL):
    clock.advance(seconds)
    return run(node.supply.issue_due())


def test_answer_just_before_the_deadline_passes(node, clock, tmp_path):
    h = add_test_file(node, tmp_path, interval=INTERVAL)
    farmer = Farmer(node)
    farmer.chunk()
    clock.advance(INTERVAL - EPS)
    assert run(node.supply.issue_due()).missed == 0
    assert farmer.answer(h) == "pass"
    result = tick(node, clock, EPS)
    assert (result.issued, result.missed) == (0, 0)  # answered in time: the timer does not visit it
    assert h in farmer.outstanding()  # window 1's challenge, taken when the farmer reads it
    assert farmer.state(h)["passes"] == 1 and farmer.state(h)["misses"] == 0


def test_answer_at_the_deadline_is_not_due_and_a_miss(make, clock, tmp_path):
    node = make(late_grace=0)  # without the grace for late answers (tests/test_late_answers.py)
    h = add_test_file(node, tmp_path, interval=INTERVAL)
    farmer = Farmer(node)
    farmer.chunk()
    challenge = farmer.challenges[h]
    clock.advance(INTERVAL)
    assert farmer.outstanding() == {}
    with pytest.raises(NodeError) as e:
        farmer.answer_stale(h, challenge)
    assert e.value.status == "not_due"
    result = run(node.supply.issue_due())
    assert (result.missed, result.issued) == (1, 1)
    row = farmer.state(h)
    assert (row["misses"], row["run"], row["state"], row["seq"]) == (1, 1, "active", 1)
    assert farmer.outstanding()[h] != challenge  # challenge 1 is out, its deadline one interval later
    assert row["deadline"] == pytest.approx(1_700_000_000 + 2 * INTERVAL)


def test_challenge_k_is_issued_at_start_plus_k_intervals(node, clock, tmp_path):
    h = add_test_file(node, tmp_path, interval=INTERVAL)
    farmer = Farmer(node)
    farmer.chunk()
    start = clock.seconds()
    seen = {farmer.challenges[h]}
    for k in range(1, 5):
        assert tick(node, clock, INTERVAL - EPS).issued == 0  # not yet
        assert farmer.answer(h) == "pass"
        assert tick(node, clock, EPS).issued == 0  # answered in time: not the timer's work
        seen.add(farmer.outstanding()[h])  # the farmer's read takes challenge k
        row = farmer.state(h)
        assert row["seq"] == k and row["deadline"] == pytest.approx(start + (k + 1) * INTERVAL)
    assert len(seen) == 5  # a used challenge is never reused
    assert farmer.state(h)["passes"] == 4


def test_a_late_pass_issues_the_current_window(node, clock, tmp_path):
    h = add_test_file(node, tmp_path, interval=INTERVAL)
    farmer = Farmer(node)
    farmer.chunk()
    start = clock.seconds()
    result = tick(node, clock, 3.5 * INTERVAL)  # the timer did not run for 3.5 intervals
    assert (result.missed, result.issued) == (1, 1)
    row = farmer.state(h)
    assert row["seq"] == 3 and row["deadline"] == pytest.approx(start + 4 * INTERVAL)


def test_misses_are_counted_and_fail_after_exactly_max_failures(make, clock, tmp_path):
    node = make(max_failures=4)
    h = add_test_file(node, tmp_path, interval=INTERVAL)
    farmer = Farmer(node)
    farmer.chunk()
    for misses in range(1, 4):
        result = tick(node, clock)
        assert (result.missed, result.failed) == (1, 0)
        row = farmer.state(h)
        assert (row["misses"], row["run"], row["state"]) == (misses, misses, "active")
    result = tick(node, clock)
    assert (result.missed, result.failed, result.issued) == (1, 1, 0)
    row = farmer.state(h)
    assert (row["state"], row["end_reason"], row["misses"]) == ("failed", "failed", 4)
    assert file_replicas(node, h) == 0
    assert run(node.v0.due(farmer.token)) == ([], [])


def test_a_pass_resets_the_run(node, clock, tmp_path):
    h = add_test_file(node, tmp_path, interval=INTERVAL)
    farmer = Farmer(node)
    farmer.chunk()
    tick(node, clock)  # miss 1
    tick(node, clock)  # miss 2
    assert farmer.state(h)["run"] == 2
    assert farmer.answer(h) == "pass"
    assert farmer.state(h)["run"] == 0
    tick(node, clock)  # the pass's window closes: no miss
    tick(node, clock)  # miss 1
    tick(node, clock)  # miss 2
    row = farmer.state(h)
    assert (row["state"], row["misses"], row["run"], row["passes"]) == ("active", 4, 2, 1)
    assert tick(node, clock).failed == 1  # miss 3 in a row
    assert farmer.state(h)["state"] == "failed"


def test_wrong_answers_fail_after_exactly_max_failures(node, clock, tmp_path):
    h = add_test_file(node, tmp_path, interval=INTERVAL)
    farmer = Farmer(node)
    farmer.chunk()
    for fails in (1, 2):
        assert farmer.answer(h, right=False) == "fail"
        row = farmer.state(h)
        assert (row["fails"], row["run"], row["state"]) == (fails, fails, "active")
        result = tick(node, clock)
        assert (result.missed, result.issued) == (0, 0)  # answered (wrongly): not also a miss, not visited
    assert farmer.answer(h, right=False) == "fail"
    row = farmer.state(h)
    assert (row["state"], row["fails"]) == ("failed", 3)
    assert file_replicas(node, h) == 0


def test_misses_and_fails_count_together(node, clock, tmp_path):
    h = add_test_file(node, tmp_path, interval=INTERVAL)
    farmer = Farmer(node)
    farmer.chunk()
    tick(node, clock)  # miss
    assert farmer.answer(h, right=False) == "fail"
    tick(node, clock)
    assert farmer.state(h)["state"] == "active"
    assert tick(node, clock).failed == 1  # miss: 3 in a row
    row = farmer.state(h)
    assert (row["state"], row["misses"], row["fails"]) == ("failed", 2, 1)


def test_a_failed_contracts_file_goes_to_another_farmer(node, clock, tmp_path):
    h = add_test_file(node, tmp_path, redundancy=1, interval=INTERVAL)
    first, second = Farmer(node, make_address(1)), Farmer(node, make_address(2))
    assert first.chunk() == h
    with pytest.raises(NodeError) as e:
        second.chunk()
    assert e.value.status == "no_chunks"
    for _ in range(3):
        tick(node, clock)
    assert first.state(h)["state"] == "failed"
    assert second.chunk() == h
    assert file_replicas(node, h) == 1
    assert second.answer(h) == "pass"


def test_redundancy_is_never_exceeded(node, clock, tmp_path):
    h = add_test_file(node, tmp_path, redundancy=3, interval=INTERVAL)
    farmers = [Farmer(node, make_address(i)) for i in range(6)]
    got = []
    for f in farmers:
        try:
            got.append(f.chunk())
        except NodeError as e:
            assert e.status == "no_chunks"
    assert got == [h, h, h] and file_replicas(node, h) == 3
    for _ in range(3):  # holders 0 and 1 answer, 2 does not, and fails
        for f in farmers[:2]:
            assert f.answer(h) == "pass"
        tick(node, clock)
    assert file_replicas(node, h) == 2
    assert farmers[3].chunk() == h
    with pytest.raises(NodeError):
        farmers[4].chunk()
    assert file_replicas(node, h) == 3


def test_ending_contracts_frees_slots(node, clock, tmp_path):
    h = add_test_file(node, tmp_path, redundancy=1, interval=INTERVAL)
    a, b, c = (Farmer(node, make_address(i)) for i in range(3))
    a.chunk()
    run(node.v0.end_contract(a.token, h))
    assert b.chunk() == h
    assert run(node.farmers.delete_token(b.token)) == 1
    assert c.chunk() == h
    assert file_replicas(node, h) == 1


def test_challenges_are_topped_up_under_the_low_water_mark(make, clock, tmp_path):
    node = make(challenge_batch=5, challenge_low_water=3)
    h = add_test_file(node, tmp_path, interval=INTERVAL)

    def unused():
        return next(f["unused_challenges"] for f in run(node.files.list()) if f["file_hash"] == h)

    farmer = Farmer(node)
    farmer.chunk()
    assert unused() == 4
    tick(node, clock)
    assert unused() == 3  # not under the mark yet
    tick(node, clock)  # 2 left: under 3, a new batch of 5
    assert unused() == 7
    file_id = run(node.stores.files.get_active(h)).id
    assert len(run(node.stores.challenges.batches(file_id))) == 2
    for _ in range(20):  # never runs out
        assert farmer.answer(h) == "pass"
        assert tick(node, clock).starved == 0


def test_a_file_that_ran_out_is_topped_up_at_once_and_nothing_is_missed(make, clock, tmp_path):
    node = make(challenge_batch=2, challenge_low_water=0)  # no top-up until a contract starves
    h = add_test_file(node, tmp_path, interval=INTERVAL)
    farmer = Farmer(node)
    farmer.chunk()
    assert tick(node, clock).issued == 1  # the last one (a miss: the timer issues the next window)
    assert farmer.answer(h) == "pass"
    result = tick(node, clock)  # answered: not visited
    assert (result.issued, result.starved, result.missed) == (0, 0, 0)
    assert farmer.outstanding() == {}  # none left for the window read: starved, the file topped up
    assert h in farmer.outstanding()  # the next read takes one
    assert farmer.answer(h) == "pass"
    assert farmer.state(h)["state"] == "active"


def test_running_a_pass_twice_is_harmless(node, clock, tmp_path):
    h = add_test_file(node, tmp_path, interval=INTERVAL)
    farmer = Farmer(node)
    farmer.chunk()
    clock.advance(INTERVAL)
    assert run(node.supply.issue_due()).missed == 1
    before = farmer.state(h)
    result = run(node.supply.issue_due())
    assert (result.issued, result.missed, result.failed) == (0, 0, 0)
    assert farmer.state(h) == before


# --- the job ---------------------------------------------------------------------------------------

def challenge_job(node):
    return build_jobs(node)[0]


def test_build_jobs_has_the_contract_timer(node, clock):
    jobs = build_jobs(node)
    assert [j.name for j in jobs][0] == "contracts"
    assert jobs[0].interval == node.config.tick


def test_the_job_runs_every_tick_and_stops_cleanly(make, clock, tmp_path):
    node = make(tick=0.5)
    h = add_test_file(node, tmp_path, interval=2)
    farmer = Farmer(node)
    farmer.chunk()
    job = challenge_job(node)
    job.startService()
    assert job.runs == 1
    for _ in range(4):
        clock.advance(0.5)
    assert job.runs == 5 and job.failures == 0
    assert farmer.state(h)["misses"] == 1  # the deadline at +2 s
    assert asdict(job.last_result) == {"issued": 1, "missed": 1, "forgiven": 0, "failed": 0, "starved": 0,
                                       "topped_up": 0, "v1_ended": 0, "v1_failed": 0, "v1_extended": 0,
                                       "downtime": 0.0, "contained": 0, "v1_contained": 0}  # the tick at +2 s
    assert job.stopService() is None  # nothing running: stops at once
    clock.advance(10)
    assert job.runs == 5


def test_the_job_survives_errors(node, clock, monkeypatch):
    job = challenge_job(node)
    calls = []

    async def broken(**kw):
        calls.append(1)
        raise RuntimeError("boom")

    monkeypatch.setattr(node.supply, "issue_due", broken)
    job.startService()
    clock.advance(node.config.tick)
    assert (job.runs, job.failures, len(calls)) == (2, 2, 2)
    job.stopService()


def test_the_start_up_pass_tops_up_every_low_file(make, clock, tmp_path):
    node = make(challenge_batch=5, challenge_low_water=3)
    h = add_test_file(node, tmp_path)
    run(mark_all_used(node.stores.challenges.db))
    timer = contract_timer(node)
    assert run(timer()).topped_up == 1
    assert run(node.files.list())[0]["unused_challenges"] == 5
    assert h
    clock.advance(1)
    assert run(timer()).topped_up == 0  # only at start-up (and for files a pass touched)


def farming_with_the_timer(make, tmp_path):
    """A node, a file, a farmer holding a contract on it, and the contract timer after a first pass."""
    node = make()
    h = add_test_file(node, tmp_path, interval=INTERVAL)
    farmer = Farmer(node)
    farmer.chunk()
    timer = contract_timer(node)
    run(timer())
    return node, h, farmer, timer


def test_the_nodes_own_downtime_is_forgiven(make, clock, tmp_path):
    node, h, farmer, timer = farming_with_the_timer(make, tmp_path)
    down_at = clock.seconds()
    assert run(node.stores.meta.last_alive()) == down_at
    # the node stops for 2.5 intervals; the deadline at +60 passes while it is down
    clock.advance(2.5 * INTERVAL)
    restarted = make()  # a new process: same database, no memory of the old one
    timer = contract_timer(restarted)
    summary = run(timer())
    assert summary.downtime == clock.seconds() - down_at
    assert (summary.missed, summary.forgiven, summary.issued) == (0, 1, 1)
    row = farmer.state(h)
    assert (row["misses"], row["run"], row["state"]) == (0, 0, "active")
    # the challenge of the window in progress at the return (deadline start + 3 intervals) was
    # issued with half its window gone: unanswered, it is forgiven too
    clock.advance(INTERVAL)
    summary = run(timer())
    assert (summary.missed, summary.forgiven) == (0, 1)
    # the next one was issued on time and counts as usual
    clock.advance(INTERVAL)
    summary = run(timer())
    assert (summary.missed, summary.forgiven) == (1, 0)
    assert farmer.state(h)["misses"] == 1


def test_a_window_cut_short_by_the_downtime_is_forgiven_and_later_deadlines_count(make, clock, tmp_path):
    node = make()
    h = add_test_file(node, tmp_path, interval=INTERVAL)
    farmer = Farmer(node)
    farmer.chunk()
    run(contract_timer(node)())
    clock.advance(INTERVAL / 2)  # down for half an interval, no deadline in the window
    restarted = make()
    timer = contract_timer(restarted)
    assert run(timer()).forgiven == 0
    clock.advance(INTERVAL / 2)  # the deadline comes after the return, but half the window was lost
    summary = run(timer())
    assert (summary.missed, summary.forgiven) == (0, 1)
    clock.advance(INTERVAL)  # a whole window after the return: counts
    summary = run(timer())
    assert (summary.missed, summary.forgiven) == (1, 0)
    assert farmer.state(h)["misses"] == 1


def test_without_the_downtime_rule_it_would_be_a_miss(node, clock, tmp_path):
    h = add_test_file(node, tmp_path, interval=INTERVAL)
    farmer = Farmer(node)
    farmer.chunk()
    clock.advance(2.5 * INTERVAL)
    assert run(node.supply.issue_due()).missed == 1
    assert farmer.state(h)["misses"] == 1


def test_a_failed_pass_is_downtime_too(node, clock, tmp_path, monkeypatch):
    h = add_test_file(node, tmp_path, interval=INTERVAL)
    farmer = Farmer(node)
    farmer.chunk()
    timer = contract_timer(node)
    run(timer())
    healthy_at = clock.seconds()
    real = node.supply.issue_due

    async def unavailable(**kw):
        raise RuntimeError("database unavailable")

    monkeypatch.setattr(node.supply, "issue_due", unavailable)
    clock.advance(INTERVAL + 1)
    with pytest.raises(RuntimeError):
        run(timer())
    monkeypatch.setattr(node.supply, "issue_due", real)
    clock.advance(1)
    summary = run(timer())
    assert summary.downtime == clock.seconds() - healthy_at
    assert (summary.missed, summary.forgiven) == (0, 1)
    assert farmer.state(h)["misses"] == 0


def test_a_database_outage_is_one_warning_per_pass_not_a_traceback(node, clock, monkeypatch):
    from twisted.logger import globalLogPublisher

    from downstream_tx.db.database import DatabaseUnavailable

    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        async def unavailable(**kw):
            raise DatabaseUnavailable("update_challenges: database unavailable (OperationalError)")

        monkeypatch.setattr(node.supply, "issue_due", unavailable)
        job = challenge_job(node)
        job.startService()
        clock.advance(node.config.tick)
        assert job.runs == 2 and job.failures == 2
        job.stopService()
    finally:
        globalLogPublisher.removeObserver(events.append)
    mine = [e for e in events if e.get("job") == "contracts"]
    assert mine and all("log_failure" not in e for e in mine)


def test_failed_contracts_are_logged_with_farmer_and_file_never_the_token(node, clock, tmp_path):
    """Not just "1 contracts failed": each failed contract names its farmer id and file hash."""
    from twisted.logger import formatEvent, globalLogPublisher

    h = add_test_file(node, tmp_path, interval=INTERVAL)
    farmer = Farmer(node)
    farmer.chunk()
    timer = contract_timer(node)
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        for _ in range(3):
            clock.advance(INTERVAL)
            summary = run(timer())
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert summary.failed == 1
    contract_id = farmer.state(h)["id"]
    lines = [formatEvent(e) for e in events if "failed (" in formatEvent(e)]
    farmer_id = __import__("hashlib").sha256(bytes.fromhex(farmer.token)).hexdigest()[:20]
    assert lines == [f"contract {contract_id} failed (3 consecutive misses or fails): farmer {farmer_id}, "
                     f"file {h} (v0)"]
    assert not any(farmer.token in formatEvent(e) for e in events)


def test_the_page_of_a_pass_carries_the_failed_contract_ids(node, clock, tmp_path):
    h = add_test_file(node, tmp_path, interval=INTERVAL)
    farmer = Farmer(node)
    farmer.chunk()
    for _ in range(3):
        result = tick(node, clock)
    assert result.failed == 1 and result.failed_ids == [farmer.state(h)["id"]]


def test_at_most_twenty_failed_contracts_are_named_per_pass(node, clock):
    from twisted.logger import formatEvent, globalLogPublisher

    from downstream_tx.db.contracts import TickResult
    from downstream_tx.db.farmers import FailedContract
    from downstream_tx.db.seeded import ExpireResult

    asked: list[list[int]] = []

    class Farmers:
        async def failed_contracts(self, ids):
            asked.append(list(ids))
            return [FailedContract(cid, "f" * 20, "a" * 64, 0 if cid < 100 else 1, None) for cid in ids]

    async def issue_due(forgive=None):
        return TickResult(failed=15, failed_ids=list(range(1, 16)))

    async def expire():
        return ExpireResult(failed=10, failed_ids=list(range(101, 111)))

    timer = contract_timer(node)
    timer.farmers = Farmers()
    node.supply.issue_due, node.expiry.expire = issue_due, expire
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        summary = run(timer())
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert (summary.failed, summary.v1_failed) == (15, 10)
    assert asked == [list(range(1, 16)) + list(range(101, 106))]
    lines = [formatEvent(e) for e in events if "failed" in formatEvent(e) and "timer contracts" not in formatEvent(e)]
    assert len(lines) == 21 and lines[-1] == "… and 5 more contracts failed in this pass"
    assert lines[0].startswith("contract 1 failed (3 consecutive misses or fails)") and lines[0].endswith("(v0)")
    assert lines[19].startswith("contract 105 failed (challenge not answered before it was due)")


# --- answered ahead: the timer visits only the windows that ended unanswered ------------------------

def due_rows(node, now: float) -> int:
    """The contracts in the timer's range at ``now`` (what its pass reads)."""
    return run(node.stores.db.run("due_rows", lambda txn: txn.scalar(
        "SELECT COUNT(*) FROM contracts WHERE state = 'active' AND protocol = 0 AND deadline <= ?", (now,))))


def test_the_timer_reads_only_the_contracts_whose_window_ended_unanswered(make, clock, tmp_path):
    node = make()
    h = add_test_file(node, tmp_path, redundancy=5, interval=INTERVAL)
    farmers = [Farmer(node, make_address(i)) for i in range(5)]
    start = clock.seconds()
    for f in farmers:
        assert f.chunk() == h
    for k in range(1, 4):
        for f in farmers[1:]:  # all but the first answer in time
            assert f.answer(h) == "pass"
        clock.advance(INTERVAL)
        assert due_rows(node, clock.seconds()) == 1  # the miss, nothing else
        result = run(node.supply.issue_due())
        assert (result.missed, result.issued, result.failed) == (1, int(k < 3), int(k == 3))  # the third fails it
        for f in farmers[1:]:  # and each still gets window k's challenge, due at its end
            _, due = run(node.v0.due(f.token))
            assert [r["deadline"] for r in due] == [pytest.approx(start + (k + 1) * INTERVAL)]
            assert f.state(h)["seq"] == k
    assert [f.state(h)["passes"] for f in farmers] == [0, 3, 3, 3, 3]


def test_a_window_never_read_after_an_answer_is_a_miss(node, clock, tmp_path):
    h = add_test_file(node, tmp_path, interval=INTERVAL)
    farmer = Farmer(node)
    farmer.chunk()
    start = clock.seconds()
    assert farmer.answer(h) == "pass"
    assert tick(node, clock).issued == 0  # window 1 begins: not the timer's work
    result = tick(node, clock)  # window 1 ended, never read: taken now and missed, window 2 issued
    assert (result.missed, result.issued) == (1, 1)
    row = farmer.state(h)
    assert (row["seq"], row["misses"], row["run"], row["answered"]) == (2, 1, 1, 0)
    assert row["deadline"] == pytest.approx(start + 3 * INTERVAL)
    assert h in farmer.outstanding()


def test_the_first_read_of_a_window_takes_one_challenge(node, clock, tmp_path):
    h = add_test_file(node, tmp_path, interval=INTERVAL)
    farmer = Farmer(node)
    farmer.chunk()
    assert farmer.answer(h) == "pass"

    def unused():
        return next(f["unused_challenges"] for f in run(node.files.list()) if f["file_hash"] == h)

    before = unused()
    clock.advance(INTERVAL / 2)
    assert farmer.outstanding() == {}  # window 0 answered, window 1 not begun: nothing taken
    assert unused() == before
    clock.advance(INTERVAL / 2)
    first = farmer.outstanding()
    assert farmer.outstanding() == first and unused() == before - 1  # read again: the same one
    assert farmer.answer(h) == "pass"


def test_an_answer_before_reading_is_judged_against_the_window_it_arrived_in(make, clock, tmp_path):
    node = make(late_grace=0)
    h = add_test_file(node, tmp_path, interval=INTERVAL)
    farmer = Farmer(node)
    farmer.chunk()
    old = farmer.challenges[h]
    assert farmer.answer(h) == "pass"
    clock.advance(INTERVAL / 2)
    with pytest.raises(NodeError) as e:  # window 0 answered already, window 1 not begun
        farmer.answer_stale(h, old)
    assert e.value.status == "not_due"
    clock.advance(INTERVAL / 2 + 1)
    assert farmer.answer_stale(h, old) == "fail"  # inside window 1, not its challenge (as if issued on time)
    row = farmer.state(h)
    assert (row["seq"], row["fails"], row["run"]) == (1, 1, 1)


def test_a_right_answer_just_after_the_turn_of_a_window_read_late_is_a_late_pass(make, clock, tmp_path):
    node = make(late_grace=5)
    h = add_test_file(node, tmp_path, interval=INTERVAL)
    farmer = Farmer(node)
    farmer.chunk()
    assert farmer.answer(h) == "pass"
    clock.advance(2 * INTERVAL - 1)
    challenge = farmer.outstanding()[h]  # window 1, read a second before its end
    clock.advance(2)
    assert run(node.supply.issue_due()).missed == 1  # the timer turns it: a miss, kept as the previous one
    assert farmer.answer_stale(h, challenge) == "late_pass"
    row = farmer.state(h)
    assert (row["misses"], row["passes"], row["run"], row["seq"]) == (0, 2, 0, 2)


def test_an_unread_window_that_ended_while_the_node_was_down_is_forgiven(make, clock, tmp_path):
    _, h, farmer, _ = farming_with_the_timer(make, tmp_path)
    assert farmer.answer(h) == "pass"
    clock.advance(2.5 * INTERVAL)  # down from now: window 1 (never read) ends while the node is away
    summary = run(contract_timer(make())())
    assert (summary.missed, summary.forgiven, summary.issued) == (0, 1, 1)
    row = farmer.state(h)
    assert (row["misses"], row["run"], row["seq"], row["state"]) == (0, 0, 2, "active")


def test_a_contract_answered_before_this_form_is_visited_once(node, clock, tmp_path):
    """A row an older node wrote (answered, its deadline the end of the answered window) is issued
    its next window by the timer, as before; answered again, it waits answered ahead."""
    h = add_test_file(node, tmp_path, interval=INTERVAL)
    farmer = Farmer(node)
    farmer.chunk()
    start = clock.seconds()
    assert farmer.answer(h) == "pass"
    run(node.stores.db.run("old_form", lambda txn: txn.execute(
        "UPDATE contracts SET deadline = start + (seq + 1) * interval_s")))
    clock.advance(INTERVAL)
    assert due_rows(node, clock.seconds()) == 1
    result = run(node.supply.issue_due())
    assert (result.missed, result.issued) == (0, 1)
    assert farmer.state(h)["deadline"] == pytest.approx(start + 2 * INTERVAL)
    assert farmer.answer(h) == "pass"
    clock.advance(INTERVAL)
    assert due_rows(node, clock.seconds()) == 0
    assert run(node.supply.issue_due()).issued == 0
    assert h in farmer.outstanding() and farmer.state(h)["seq"] == 2


def test_reading_a_window_keeps_the_unanswered_counter(node, clock, tmp_path):
    h = add_test_file(node, tmp_path, interval=INTERVAL)
    farmer = Farmer(node)
    farmer.chunk()

    def unanswered():
        return run(node.stores.db.run("c", lambda txn: txn.scalar(
            "SELECT COALESCE(SUM(n), 0) FROM counters WHERE name = 'unanswered.0'")))

    assert unanswered() == 1
    assert farmer.answer(h) == "pass"
    assert unanswered() == 0
    clock.advance(INTERVAL)
    assert unanswered() == 0  # window 1 not read yet
    farmer.outstanding()
    assert unanswered() == 1
