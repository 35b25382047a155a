"""v0.challenges.ChallengeSupply directly, on each engine: batches, the low-water top-up (a file
already being topped up is skipped, the other low files still are: issue 16, survivor 3), the
batch request checks."""

from __future__ import annotations

import pytest

from downstream_tx.errors import NodeError
from downstream_tx.v0.challenges import check_batch_request
from support import add_test_file, make_config, make_node, run
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
