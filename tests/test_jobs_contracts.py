"""The contract timer (``jobs/contracts.py``): one summary line per pass, each failed contract named
with its farmer and file, the downtime given to the v1 contracts, a clean state only after a
successful pass. SQLite, ``task.Clock``, blocking work inline."""

from __future__ import annotations

import pytest
from twisted.logger import formatEvent

from downstream_tx.db.contracts import TickResult
from downstream_tx.db.farmers import FailedContract
from downstream_tx.db.seeded import ExpireResult
from downstream_tx.jobs.contracts import FAILED_LINES, ContractTimer, PassSummary
from downstream_tx.runtime import contract_timer
from support import ADDRESS, add_test_file, run
from support.stored import mark_all_used


@pytest.fixture
def make(sqlite_nodes):
    return sqlite_nodes


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


def test_only_the_first_pass_after_a_start_tops_up_every_low_file(make, tmp_path, clock):
    node = make(challenge_batch=5, challenge_low_water=3)
    fid = run(node.stores.files.get_active(add_test_file(node, tmp_path))).id
    timer = contract_timer(node)
    run(mark_all_used(node.stores.challenges.db))
    assert run(timer()).topped_up == 1 and timer.started is True
    run(mark_all_used(node.stores.challenges.db))
    clock.advance(1)
    assert run(timer()).topped_up == 0
    assert run(node.stores.challenges.unused(fid)) == 0
