"""v0.challenges.ChallengeSupply directly, on each engine: batches, the low-water top-up (a file
already being topped up is skipped, the other low files still are: issue 16, survivor 3), the
batch request checks."""

from __future__ import annotations

import dataclasses

import pytest

from downstream_tx.errors import INVALID, NodeError
from downstream_tx.v0 import challenges
from downstream_tx.v0.challenges import check_batch_request
from support import ADDRESS, add_test_file, make_config, make_node, run, stored_bytes
from support.stored import mark_all_used


@pytest.fixture
def supplied(tmp_path, db_url, clock):
    node = make_node(make_config(tmp_path, db_url, challenge_batch=5, challenge_low_water=3), clock)
    hashes = [add_test_file(node, tmp_path, size=1000) for _ in range(3)]
    ids = [run(node.stores.files.get_active(h)).id for h in hashes]
    yield node, ids
    node.db.close()


def unused(node, file_ids) -> list[int]:
    return [run(node.stores.challenges.unused(i)) for i in file_ids]


@pytest.mark.parametrize("busy", [0, 1, 2])
def test_top_up_skips_a_file_being_topped_up_and_still_tops_up_the_others(supplied, busy):
    node, ids = supplied
    assert unused(node, ids) == [5, 5, 5]
    run(mark_all_used(node.stores.challenges.db))
    node.supply._topping_up.add(ids[busy])
    assert run(node.supply.top_up()) == 2
    assert unused(node, ids) == [0 if i == busy else 5 for i in range(3)]
    node.supply._topping_up.discard(ids[busy])
    assert run(node.supply.top_up()) == 1
    assert unused(node, ids) == [5, 5, 5]
    assert node.supply._topping_up == set()


def test_top_up_only_under_the_low_water_mark_and_only_the_given_files(supplied):
    node, ids = supplied
    assert run(node.supply.top_up()) == 0  # 5 unused, mark 3
    assert run(node.supply.top_up(low_water=6)) == 3
    assert run(node.supply.top_up([ids[0]], low_water=11)) == 1
    assert unused(node, ids) == [15, 10, 10]


def test_a_removed_file_is_not_topped_up(supplied):
    node, ids = supplied
    run(mark_all_used(node.stores.challenges.db))
    file_hash = run(node.stores.files.get(ids[0])).file_hash
    run(node.files.remove(file_hash))
    assert run(node.supply.top_up()) == 2


def test_generate_with_a_root_seed_is_reproducible(supplied):
    node, ids = supplied
    file_hash = run(node.stores.files.get(ids[0])).file_hash
    batch = run(node.supply.generate(ids[0], file_hash, b"\x01" * 32, 4))
    assert batch["count"] == 4 and batch["root_seed"] == "01" * 32 and batch["file_hash"] == file_hash
    again = run(node.supply.generate(ids[1], run(node.stores.files.get(ids[1])).file_hash, b"\x01" * 32, 4))
    assert again["merkle_root"] != batch["merkle_root"]  # other bytes, other answers


@pytest.mark.parametrize("count, seed, status", [(0, None, "invalid_count"), (100_001, None, "invalid_count"),
                                                 (1, b"x" * 31, "invalid_root_seed"),
                                                 (1, b"x" * 33, "invalid_root_seed")])
def test_batch_request_checks(count, seed, status):
    with pytest.raises(NodeError) as e:
        check_batch_request(count, seed)
    assert e.value.status == status


def test_batch_request_bounds_are_inclusive():
    check_batch_request(1, None)
    check_batch_request(100_000, b"x" * 32)


# --- the supply on SQLite, its edges (the pass in pages, progress, marks, the low-water mark) ----------

@pytest.fixture
def make(sqlite_nodes):
    return sqlite_nodes


def file_ids(node, hashes) -> list[int]:
    return [run(node.stores.files.get_active(h)).id for h in hashes]


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


def test_a_pass_counts_its_misses_in_the_results(make, tmp_path, clock):
    node = make()
    add_test_file(node, tmp_path, interval=60)
    run(node.v0.get_chunk(run(node.v0.create_token(ADDRESS))))
    counted: list[tuple[str, int, int]] = []
    node.results.observers.append(lambda result, n, protocol: counted.append((result, n, protocol)))
    clock.advance(60)
    assert run(node.supply.issue_due()).missed == 1
    assert counted == [("miss", 1, 0)]
