"""Pins for the v0 timer path (``v0/challenges.py``, ``db/contracts.py``, ``jobs/contracts.py``): each
test fails on a mutant that survived the other tests (docs/testing.md, "Latest scores"). SQLite,
``task.Clock``, blocking work inline."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest
from twisted.internet import task
from twisted.logger import formatEvent, globalLogPublisher

from downstream_tx.core.tokens import hash_token
from downstream_tx.db import challenges as db_challenges
from downstream_tx.db import contracts as db_contracts
from downstream_tx.db.contracts import TickResult
from downstream_tx.db.farmers import FailedContract
from downstream_tx.db.seeded import ExpireResult
from downstream_tx.errors import INVALID, NodeError
from downstream_tx.jobs.contracts import FAILED_LINES, ContractTimer, PassSummary
from downstream_tx.runtime import contract_timer
from downstream_tx.v0 import challenges
from support import ADDRESS, add_test_file, file_replicas, make_config, make_node, run, stored_bytes, token_row
from support.stored import mark_all_used


@pytest.fixture
def make(tmp_path, clock):
    nodes = []

    def factory(**overrides):
        node = make_node(make_config(tmp_path, **overrides), clock)
        nodes.append(node)
        return node

    yield factory
    for n in nodes:
        n.db.close()


@pytest.fixture
def logged():
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


def file_ids(node, hashes) -> list[int]:
    return [run(node.stores.files.get_active(h)).id for h in hashes]


def unused(node, ids) -> list[int]:
    return [run(node.stores.challenges.unused(i)) for i in ids]


# --- v0/challenges.py -----------------------------------------------------------------------------


def test_the_pass_runs_in_pages_of_5000_contracts(make):
    node = make()
    assert challenges.PASS_PAGE == 5000
    limits = []
    real = node.stores.contracts.issue_due

    def issue_due(now, max_failures, limit, forgive):
        limits.append(limit)
        return real(now, max_failures, limit, forgive)

    node.stores.contracts.issue_due = issue_due
    run(node.supply.issue_due())
    assert limits == [5000]


def test_generate_reports_its_read_progress_and_hashes_the_same(make, tmp_path):
    node = make()
    h = add_test_file(node, tmp_path, size=3000)
    [fid] = file_ids(node, [h])
    seen: list[tuple[int, int]] = []
    with_progress = run(node.supply.generate(fid, h, b"\x02" * 32, 3, lambda done, total: seen.append((done, total))))
    plain = run(node.supply.generate(fid, h, b"\x02" * 32, 3))
    assert with_progress["merkle_root"] == plain["merkle_root"]
    assert seen and seen[-1] == (3000, 3000) and all(total == 3000 for _, total in seen)
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)
    assert len(stored_bytes(node, h)) == 3000


def test_a_random_root_seed_is_32_bytes(make, tmp_path):
    node = make(challenge_batch=2, challenge_low_water=1)
    h = add_test_file(node, tmp_path, size=100)
    [fid] = file_ids(node, [h])
    batch = run(node.supply.generate(fid, h))
    assert len(bytes.fromhex(batch["root_seed"])) == 32 and batch["count"] == 2
    assert set(batch) == {"batch_id", "file_hash", "root_seed", "merkle_root", "count"}


def test_a_file_is_marked_while_it_is_topped_up(make, tmp_path):
    """A second top-up that starts while the first one computes the file's batch skips that file."""
    node = make(challenge_batch=4, challenge_low_water=3)
    [fid] = file_ids(node, [add_test_file(node, tmp_path, size=100)])
    run(mark_all_used(node.stores.challenges.db))
    real = node.supply.generate
    nested = []

    async def generate(file_id, file_hash, *args, **kw):
        nested.append((file_id in node.supply._topping_up, await node.supply.top_up([file_id])))
        return await real(file_id, file_hash, *args, **kw)

    node.supply.generate = generate
    assert run(node.supply.top_up([fid])) == 1
    assert nested == [(True, 0)]
    assert node.supply._topping_up == set()


@pytest.mark.parametrize("gone", ["missing", "removed"])
def test_a_file_gone_since_the_low_water_query_is_skipped_and_the_others_are_topped_up(
        make, tmp_path, logged, gone):
    node = make(challenge_batch=4, challenge_low_water=3)
    ids = file_ids(node, [add_test_file(node, tmp_path, size=100) for _ in range(3)])
    run(mark_all_used(node.stores.challenges.db))
    real = node.stores.files.get

    async def get(file_id):
        row = await real(file_id)
        if file_id != ids[0]:
            return row
        return None if gone == "missing" else dataclasses.replace(row, removed=1.0)

    node.stores.files.get = get
    assert run(node.supply.top_up(ids)) == 2
    assert unused(node, ids) == [0, 4, 4]
    assert not [e for e in logged if "log_failure" in e]
    assert node.supply._topping_up == set()


def test_a_failed_top_up_is_logged_with_its_file_and_the_others_still_run(make, tmp_path, logged):
    node = make(challenge_batch=4, challenge_low_water=3)
    ids = file_ids(node, [add_test_file(node, tmp_path, size=100) for _ in range(2)])
    run(mark_all_used(node.stores.challenges.db))
    real = node.supply.generate

    async def generate(file_id, file_hash, *args, **kw):
        if file_id == ids[0]:
            raise OSError("disk gone")
        return await real(file_id, file_hash, *args, **kw)

    node.supply.generate = generate
    assert run(node.supply.top_up(ids)) == 1
    failures = [e for e in logged if "log_failure" in e]
    assert [(e["log_format"], e["file_id"]) for e in failures] == [
        ("challenge top-up for file {file_id} failed", ids[0])]
    assert failures[0]["log_failure"].check(OSError)
    assert unused(node, ids) == [0, 4]
    assert node.supply._topping_up == set()



def test_a_low_water_mark_of_zero_waits_for_a_starved_contract(make, tmp_path, clock):
    """With ``challenge_low_water = 0`` a pass that issues a file's last challenge does not top it up;
    the pass after it, which finds the file starved, does."""
    node = make(challenge_batch=2, challenge_low_water=0)
    h = add_test_file(node, tmp_path, interval=60)
    [fid] = file_ids(node, [h])
    token = run(node.v0.create_token(ADDRESS))
    run(node.v0.get_chunk(token))
    clock.advance(60)
    assert run(node.supply.issue_due()).issued == 1
    assert unused(node, [fid]) == [0]
    clock.advance(60)
    assert run(node.supply.issue_due()).issued == 1
    assert unused(node, [fid]) == [1]


def test_a_starved_contract_tops_up_only_the_files_that_ran_out(make, tmp_path, clock):
    """With ``challenge_low_water = 0``, a starved contract lowers nothing: its file (no challenge left)
    is topped up, another file the pass touched that still has one is not."""
    node = make(challenge_batch=2, challenge_low_water=0)
    a, b = add_test_file(node, tmp_path, interval=60), add_test_file(node, tmp_path, interval=60)
    ids = file_ids(node, [a, b])
    token = run(node.v0.create_token(ADDRESS))
    assert {run(node.v0.get_chunk(token)).file_hash for _ in range(2)} == {a, b}
    run(node.supply.generate(ids[1], b, None, 2))
    assert unused(node, ids) == [1, 3]
    clock.advance(60)
    run(node.supply.issue_due())
    assert unused(node, ids) == [0, 2]
    clock.advance(60)
    result = run(node.supply.issue_due())  # a's contract starves: a is topped up and served, b is not
    assert (result.issued, result.starved) == (2, 0)
    assert unused(node, ids) == [1, 1]


def test_the_operators_batch_request_refusals_in_words():
    with pytest.raises(NodeError) as e:
        challenges.check_batch_request(0, None)
    assert (e.value.kind, e.value.status, e.value.message) == (
        INVALID, "invalid_count", "count must be from 1 to 100000")
    with pytest.raises(NodeError) as e:
        challenges.check_batch_request(1, b"x")
    assert (e.value.kind, e.value.status, e.value.message) == (
        INVALID, "invalid_root_seed", "root seed must be 32 bytes (64 hex characters)")

# --- jobs/contracts.py ----------------------------------------------------------------------------


def test_a_pass_summary_in_words():
    assert PassSummary().describe() == ""
    assert PassSummary(1, 2, 3, 4, 5, 6, 7, 8, 9, 0.0, 10, 11).describe() == (
        "1 issued, 2 missed, 10 asked again in containment, 3 forgiven, 4 contracts failed, 5 starved, 6 files "
        "topped up; v1: 7 ended, 8 failed, 11 asked again in containment, 9 extended over the downtime")
    for name in ("issued", "missed", "forgiven", "failed", "starved", "topped_up", "v1_ended", "v1_failed",
                 "v1_extended", "contained", "v1_contained"):
        assert PassSummary(**{name: 1}).describe().startswith("0 issued" if name != "issued" else "1 issued")
    assert PassSummary(downtime=12.34).describe() == (
        "0 issued, 0 missed, 0 asked again in containment, 0 forgiven, 0 contracts failed, 0 starved, 0 files "
        "topped up; v1: 0 ended, 0 failed, 0 asked again in containment, 0 extended over the downtime (no timer run "
        "for 12.3s (node down or unhealthy): deadlines in that window are not counted as misses)")
    assert FAILED_LINES == 20


def test_a_pass_counts_its_misses_in_the_results(make, tmp_path, clock):
    node = make()
    add_test_file(node, tmp_path, interval=60)
    run(node.v0.get_chunk(run(node.v0.create_token(ADDRESS))))
    counted: list[tuple[str, int, int]] = []
    node.results.observers.append(lambda result, n, protocol: counted.append((result, n, protocol)))
    clock.advance(60)
    assert run(node.supply.issue_due()).missed == 1
    assert counted == [("miss", 1, 0)]


# --- db/contracts.py ------------------------------------------------------------------------------


def token_id(node, token: str) -> int:
    return token_row(node, token).id


class SlotTakenTxn:
    """A transaction in which another farmer takes the last replica slot just before the guarded
    update, ``times`` times: the update changes no row."""

    def __init__(self, txn, times: int):
        self._txn, self.times = txn, times

    def execute(self, sql, params=()):
        if sql.startswith("UPDATE files SET replicas = replicas + 1") and self.times:
            self.times -= 1
            return SimpleNamespace(rowcount=0)
        return self._txn.execute(sql, params)

    def __getattr__(self, name):
        return getattr(self._txn, name)


@pytest.mark.parametrize("times, assigned", [(1, True), (4, True), (5, False)])
def test_assign_picks_again_when_the_slot_was_taken_up_to_five_attempts(make, tmp_path, clock, times, assigned):
    node = make()
    h = add_test_file(node, tmp_path)
    tid = token_id(node, run(node.v0.create_token(ADDRESS)))
    got = run(node.db.run("t", lambda txn: db_contracts.assign_txn(SlotTakenTxn(txn, times), tid, clock.seconds())))
    assert (got is not None) == assigned
    if assigned:
        assert (got.file_hash, got.deadline) == (h, clock.seconds() + 60)
    assert file_replicas(node, h) == int(assigned)


@pytest.mark.parametrize("empty, assigned", [(1, True), (4, True), (5, False)])
def test_assign_gives_the_slot_back_when_no_challenge_is_left(make, tmp_path, clock, monkeypatch, empty, assigned):
    node = make()
    h = add_test_file(node, tmp_path)
    tid = token_id(node, run(node.v0.create_token(ADDRESS)))
    real = db_challenges.take_txn
    calls = []

    def take_txn(txn, file_id, count):
        calls.append(file_id)
        return [] if len(calls) <= empty else real(txn, file_id, count)

    monkeypatch.setattr(db_challenges, "take_txn", take_txn)
    got = run(node.db.run("t", lambda txn: db_contracts.assign_txn(txn, tid, clock.seconds())))
    assert (got is not None) == assigned
    assert len(calls) == min(empty + 1, 5)
    assert file_replicas(node, h) == int(assigned)


def test_an_assignment_is_frozen(make, tmp_path):
    node = make()
    add_test_file(node, tmp_path)
    got = run(node.v0.get_chunk(run(node.v0.create_token(ADDRESS))))
    with pytest.raises(dataclasses.FrozenInstanceError):
        got.deadline = 0.0  # type: ignore[misc]


@pytest.mark.parametrize("window, forgiven", [
    ((-1, -1), True),  # the deadline is one interval after the window's end: forgiven
    ((0, 0), False),  # the deadline is the window's start: the pass then saw it, it counts
    ((-2, -1.5), False),  # more than an interval after the window
])
def test_the_edges_of_the_forgive_window(make, tmp_path, clock, window, forgiven):
    node = make()
    add_test_file(node, tmp_path, interval=60)
    run(node.v0.get_chunk(run(node.v0.create_token(ADDRESS))))
    clock.advance(60)
    now = clock.seconds()
    forgive = (now + window[0] * 60, now + window[1] * 60)
    result = run(node.stores.contracts.issue_due(now, 3, 100, forgive))
    assert (result.forgiven, result.missed) == (int(forgiven), int(not forgiven))


def test_a_starved_contract_has_no_challenge_nothing_due_and_no_miss(make, tmp_path, clock):
    node = make(challenge_batch=4, challenge_low_water=0)
    h = add_test_file(node, tmp_path, interval=60)
    token = run(node.v0.create_token(ADDRESS))
    run(node.v0.get_chunk(token))
    run(mark_all_used(node.stores.challenges.db))
    clock.advance(60)
    result = run(node.stores.contracts.issue_due(clock.seconds(), 3, 100, None))  # no top-up here
    assert (result.missed, result.issued, result.starved) == (1, 0, 1)
    _, [row] = run(node.stores.contracts.of_token(hash_token(token)))
    assert (row["file_hash"], row["challenge"], row["answered"], row["challenge_id"]) == (h, None, True, None)
    _, answer = run(node.stores.contracts.answer(hash_token(token), h, "0" * 64, clock.seconds(), 3))
    assert answer.status == "not_due"
    clock.advance(60)
    assert run(node.stores.contracts.issue_due(clock.seconds(), 3, 100, None)).missed == 0


def test_ending_a_contract_says_removed_and_false_when_there_is_none(make, tmp_path, clock):
    node = make()
    h = add_test_file(node, tmp_path)
    token = run(node.v0.create_token(ADDRESS))
    run(node.v0.get_chunk(token))
    store = node.stores.contracts
    assert run(store.end(hash_token(token), h, clock.seconds()))[1] is True
    assert run(store.latest(hash_token(token), h))["end_reason"] == "removed"
    assert run(store.end(hash_token(token), h, clock.seconds()))[1] is False


class FakeFarmers:
    """``FarmerStore.failed_contracts`` answering with ``rows`` (or raising ``error``)."""

    def __init__(self, rows=(), error: Exception | None = None):
        self.rows, self.error, self.asked = list(rows), error, []

    async def failed_contracts(self, ids):
        self.asked.append(list(ids))
        if self.error is not None:
            raise self.error
        return list(self.rows)


def failing_pass(node, v0_ids, v1_ids=()):
    async def issue_due(forgive=None):
        return TickResult(failed=len(v0_ids), failed_ids=list(v0_ids))

    async def expire():
        return ExpireResult(failed=len(v1_ids), failed_ids=list(v1_ids))

    node.supply.issue_due, node.expiry.expire = issue_due, expire


def lines(events) -> list[str]:
    return [formatEvent(e) for e in events if e.get("log_namespace") == "downstream_tx.jobs.contracts"]


def test_a_pass_without_failed_contracts_looks_nothing_up(make, logged):
    node = make()
    timer = contract_timer(node)
    timer.farmers = FakeFarmers()
    run(timer())
    assert timer.farmers.asked == [] and lines(logged) == []


def test_without_a_farmer_store_failed_contracts_are_only_counted(make, logged):
    node = make()
    failing_pass(node, [1, 2])
    timer = ContractTimer(node.supply, node.expiry, node.stores.meta, node.clock)
    assert run(timer()).failed == 2
    assert lines(logged) == [] and not [e for e in logged if "log_failure" in e]


def test_a_failed_look_up_is_logged_and_the_pass_completes(make, logged):
    node = make()
    failing_pass(node, [1, 2, 3])
    timer = contract_timer(node)
    timer.farmers = FakeFarmers(error=RuntimeError("gone"))
    assert run(timer()).failed == 3
    [event] = [e for e in logged if "log_failure" in e]
    assert (event["log_format"], event["n"]) == ("could not look up the {n} failed contracts", 3)
    assert timer.clean


def test_failed_contracts_are_named_v0_first_and_exactly_twenty_need_no_more_line(make, logged):
    node = make()
    failing_pass(node, list(range(1, 11)), list(range(101, 111)))
    timer = contract_timer(node)
    rows = [FailedContract(cid, "f" * 20, "a" * 64, 1, None) for cid in range(101, 111)]
    rows += [FailedContract(cid, "f" * 20, "a" * 64, 0, None) for cid in range(1, 11)]
    timer.farmers = FakeFarmers(rows)
    run(timer())
    named = [line for line in lines(logged) if line.startswith("contract ")]
    assert [int(line.split()[1]) for line in named] == [*range(1, 11), *range(101, 111)]
    assert not [line for line in lines(logged) if "more contracts failed" in line]


def test_a_contract_of_another_protocol_is_named_as_failed(make, logged):
    node = make()
    failing_pass(node, [7])
    timer = contract_timer(node)
    timer.farmers = FakeFarmers([FailedContract(7, "f" * 20, "a" * 64, 2, None)])
    run(timer())
    assert lines(logged) == [f"contract 7 failed (failed): farmer {'f' * 20}, file {'a' * 64} (v2)"]


def test_a_restart_at_the_same_instant_is_no_downtime(make, tmp_path, clock):
    node = make()
    add_test_file(node, tmp_path, interval=60)
    run(node.v0.get_chunk(run(node.v0.create_token(ADDRESS))))
    run(contract_timer(node)())
    timer = contract_timer(make())  # restarted, no time has passed
    summary = run(timer())
    assert (summary.downtime, timer.downtime) == (0.0, None)
    clock.advance(60)
    assert (run(timer()).missed, timer.downtime) == (1, None)


def test_the_downtime_is_given_to_the_v1_contracts_and_counted(make, clock, monkeypatch):
    node = make()
    run(contract_timer(node)())
    clock.advance(100)
    windows = []

    async def shift_for_downtime(window):
        windows.append(window)
        return 3

    monkeypatch.setattr(node.expiry, "shift_for_downtime", shift_for_downtime)
    timer = contract_timer(node)
    assert timer.clean is False
    summary = run(timer())
    assert (summary.v1_extended, summary.downtime) == (3, 100.0)
    assert windows == [(clock.seconds() - 100, clock.seconds())]


def test_a_failed_pass_leaves_the_timer_unclean(make, monkeypatch):
    node = make()
    timer = contract_timer(node)
    run(timer())
    assert timer.clean is True

    async def broken(**kw):
        raise RuntimeError("database unavailable")

    monkeypatch.setattr(node.supply, "issue_due", broken)
    with pytest.raises(RuntimeError):
        run(timer())
    assert timer.clean is False


def windows_of(node) -> list[tuple]:
    """(seq, issued, deadline) of every contract (a read-only look at what the store wrote)."""
    return run(node.db.run("t", lambda txn: [tuple(r) for r in txn.execute(
        "SELECT seq, issued, deadline FROM contracts ORDER BY id").fetchall()]))


def test_a_late_pass_issues_challenge_k_as_of_start_plus_k_intervals(make, tmp_path, clock):
    node = make()
    add_test_file(node, tmp_path, interval=60)
    run(node.v0.get_chunk(run(node.v0.create_token(ADDRESS))))
    start = clock.seconds()
    clock.advance(3.5 * 60)
    run(node.supply.issue_due())
    assert windows_of(node) == [(3, start + 180, start + 240)]


def test_the_window_never_goes_back_when_rounding_puts_the_pass_a_hair_early(tmp_path):
    """Near 2**31 s, ``(start + 60) - start`` rounds to 59.99999976 s: the pass at the deadline must
    still issue challenge 1 (``seq + 1``), not challenge 0 again."""
    clock = task.Clock()
    start = 2.0**31 - 3 * 2.0**-22
    clock.advance(start)
    node = make_node(make_config(tmp_path), clock)
    try:
        add_test_file(node, tmp_path, interval=60)
        run(node.v0.get_chunk(run(node.v0.create_token(ADDRESS))))
        clock.advance(60)
        assert (clock.seconds() - start) / 60 < 1
        assert run(node.supply.issue_due()).missed == 1
        assert windows_of(node) == [(1, start + 60, start + 120)]
    finally:
        node.db.close()


def test_each_contract_store_call_is_one_transaction_by_its_name(make, tmp_path, clock):
    """The names the database metrics count transactions by (docs/operations.md, metrics)."""
    node = make()
    h = add_test_file(node, tmp_path)
    token = run(node.v0.create_token(ADDRESS))
    th, now, store = hash_token(token), clock.seconds(), node.stores.contracts
    names: list[str] = []
    node.db.observers.append(lambda desc, elapsed, ok: names.append(desc))
    run(store.assign(th, now))
    run(store.of_token(th))
    _, answer = run(store.answer(th, h, "0" * 64, now, 3))
    run(store.issue_due(now, 3, 10, None))
    run(store.fill_starved(now))
    run(store.latest(th, h))
    run(store.all())
    run(store.end(th, h, now))
    assert names == ["get_chunk", "due", "answer", "update_challenges", "fill_starved", "contract_latest",
                     "contracts_all", "end_contract"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        answer.status = "pass"  # type: ignore[misc]


def test_every_contract_as_a_dict(make, tmp_path, clock):
    node = make()
    h = add_test_file(node, tmp_path)
    token = run(node.v0.create_token(ADDRESS))
    run(node.v0.get_chunk(token))
    _, answer = run(node.stores.contracts.answer(hash_token(token), h, "0" * 64, clock.seconds(), 3))
    assert answer.status == "fail"
    [row] = run(node.stores.contracts.all())
    assert set(row) == {"id", "protocol", "state", "file_hash", "challenge_id", "deadline", "passes", "fails",
                        "misses", "end_reason"}
    assert (row["protocol"], row["state"], row["file_hash"], row["passes"], row["fails"], row["misses"],
            row["end_reason"]) == (0, "active", h, 0, 1, 0, None)
    assert row["deadline"] == clock.seconds() + 60 and row["challenge_id"] is not None


def test_only_the_first_pass_after_a_start_tops_up_every_low_file(make, tmp_path, clock):
    node = make(challenge_batch=5, challenge_low_water=3)
    [fid] = file_ids(node, [add_test_file(node, tmp_path)])
    timer = contract_timer(node)
    run(mark_all_used(node.stores.challenges.db))
    assert run(timer()).topped_up == 1 and timer.started is True
    run(mark_all_used(node.stores.challenges.db))
    clock.advance(1)
    assert run(timer()).topped_up == 0
    assert unused(node, [fid]) == [0]


def test_the_latest_contract_as_a_dict(make, tmp_path, clock):
    node = make()
    h = add_test_file(node, tmp_path)
    token = run(node.v0.create_token(ADDRESS))
    run(node.v0.get_chunk(token))
    row = run(node.stores.contracts.latest(hash_token(token), h))
    assert set(row) == {"id", "protocol", "state", "passes", "fails", "misses", "run", "seq", "deadline", "answered",
                        "end_reason"}
    assert (row["protocol"], row["state"], row["seq"], row["answered"], row["deadline"]) == (
        0, "active", 0, 0, clock.seconds() + 60)
