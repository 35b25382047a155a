"""The v0 contracts' store (``db/contracts.py``) beyond what the other store tests cover: the
assignment's retries and its replica slot, the forgive window's edges and the challenge window of
a late pass, starved contracts, ending a contract, the transactions by name, the dicts the admin
reads. SQLite, ``task.Clock``, blocking work inline."""

from __future__ import annotations

import dataclasses
import sqlite3
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import task

from downstream_tx.core.tokens import hash_token
from downstream_tx.db import challenges as db_challenges
from downstream_tx.db import contracts as db_contracts
from downstream_tx.db import late
from support import ADDRESS, add_test_file, file_replicas, make_config, make_node, run, token_row
from support.stored import mark_all_used


@pytest.fixture
def make(sqlite_nodes):
    return sqlite_nodes


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
    # answered (wrongly): stored answered ahead, its deadline the end of the next window
    assert row["deadline"] == clock.seconds() + 2 * 60 and row["challenge_id"] is not None


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


@settings(max_examples=300, deadline=None)
@given(start=st.floats(min_value=1e9, max_value=4e9, allow_nan=False), interval=st.integers(1, 10**6),
       seq=st.integers(0, 10**6), step=st.floats(min_value=1e-3, max_value=0.999))
def test_the_answered_ahead_form_is_told_apart_by_its_window_arithmetic(start, interval, seq, step):
    """The stored forms as SQL writes them (deadline ``start + (seq + n) * interval_s``): the one an
    answer writes is answered ahead, the one the timer or an older node wrote is not; the next
    window is pending from its first instant on, not before."""
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE contracts (start DOUBLE, interval_s INTEGER, seq INTEGER, challenge_id INTEGER, "
               "answered INTEGER, deadline DOUBLE)")
    db.execute("INSERT INTO contracts VALUES (?, ?, ?, 1, 1, NULL)", (start, interval, seq))

    def holds(sql: str, *args) -> bool:
        return bool(db.execute(f"SELECT CASE WHEN {sql} THEN 1 ELSE 0 END FROM contracts c", args).fetchone()[0])

    db.execute("UPDATE contracts SET deadline = start + (seq + 1) * interval_s")
    assert not holds(db_contracts.AHEAD)
    db.execute(f"UPDATE contracts SET {late.AHEAD_DEADLINE}")
    assert holds(db_contracts.AHEAD)
    turn = start + (seq + 1) * interval
    assert holds(db_contracts.PENDING, turn, turn)
    assert not holds(db_contracts.PENDING, turn - step * interval, turn)
