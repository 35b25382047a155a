"""The v1 contracts' store (``db/seeded.py``) through V1Farming, on each engine, with a task.Clock:
ids out of the database's range, the pool's chunks as seeded files, an unusable pooled chunk retired,
the per-request and per-address limits, the transactions by name, an ended contract, the token's
address on an answer, the pool's records, the downtime marker, ``pool_add``."""

from __future__ import annotations

import orjson
import pytest

from downstream_tx.heartbeat import HeartbeatError
from support import ADDRESS, challenges_of, make_address, refused, report_of, run
from support.stored import overwrite_state, stored_state, v1_deadline
from support.v1 import INTERVAL, prove

IP = "10.1.2.3"


@pytest.fixture
def make(seeded_nodes):
    return seeded_nodes


@pytest.fixture
def node(make):
    return make()


# --- ids, the pool, the limits -------------------------------------------------------------------------

@pytest.mark.parametrize("cid", [0, -1, (1 << 63) - 1, 1 << 63, (1 << 63) + 1, 1 << 64])
def test_ids_out_of_the_database_range_are_not_found(node, cid):
    token = run(node.v1.new_token(ADDRESS, IP))["token"]
    [c] = orjson.loads(orjson.dumps(run(node.v1.chunks(token, IP, 4096))))
    got = orjson.loads(orjson.dumps(challenges_of(node.v1.challenges(token, [cid, c["file_hash"]]))))
    assert got[0] == {"file_hash": cid, "error": "contract not found"} and "challenge" in got[1]
    report = orjson.loads(orjson.dumps(report_of(node.v1.answer(token, IP, [{"file_hash": cid, "proof": prove(c)},
                                                                      {"file_hash": c["file_hash"],
                                                                       "proof": prove(c)}]))))
    assert report == [{"file_hash": cid, "error": "contract not found"}, {"file_hash": c["file_hash"], "status": "ok"}]


def test_pooled_chunks_are_seeded_files(node):
    files = run(node.stores.files.list_active("seeded"))
    assert len(files) == 6 and run(node.stores.seeded.pool_counts()) == {4096: 6}
    for f in files:
        assert (f["kind"], f["size"], f["redundancy"], f["interval"], f["replicas"]) == ("seeded", 4096, 1,
                                                                                         INTERVAL, 0)
    token = run(node.v1.new_token(ADDRESS, IP))["token"]
    [c] = run(node.v1.chunks(token, IP, 4096))
    replicas = {f["id"]: f["replicas"] for f in run(node.stores.files.list_active("seeded"))}
    assert sorted(replicas.values()) == [0] * 5 + [1]


def test_an_unusable_pooled_chunk_is_retired_and_the_next_one_taken(node, monkeypatch):
    real = node.v1.merkle.gen_challenge
    calls = []

    def gen_challenge(state):
        calls.append(state)
        if len(calls) == 1:
            raise HeartbeatError("made with another secret")
        return real(state)

    monkeypatch.setattr(node.v1.merkle, "gen_challenge", gen_challenge)
    token = run(node.v1.new_token(ADDRESS, IP))["token"]
    got = run(node.v1.chunks(token, IP, 4096))
    assert len(got) == 1 and len(calls) == 2
    assert run(node.stores.seeded.pool_counts()) == {4096: 4}
    # the unusable chunk's file is retired, the handed-out one is live with its replica
    files = run(node.stores.files.list_active("seeded"))
    assert len(files) == 5 and sorted(f["replicas"] for f in files) == [0, 0, 0, 0, 1]


@pytest.mark.parametrize("max_chunks, expected", [(0, 4), (2, 2), (1, 1)])
def test_max_chunks_per_request(make, max_chunks, expected):
    node = make(max_chunks_per_request=max_chunks)
    token = run(node.v1.new_token(ADDRESS, IP))["token"]
    assert len(run(node.v1.chunks(token, IP, 4 * 4096))) == expected


def test_max_size_per_address_counts_live_contracts_of_every_token(make, clock):
    node = make(max_size_per_address=3 * 4096)
    token = run(node.v1.new_token(ADDRESS, IP))["token"]
    other = run(node.v1.new_token(ADDRESS, IP))["token"]
    assert len(run(node.v1.chunks(token, IP, 2 * 4096))) == 2
    assert len(run(node.v1.chunks(other, IP, 2 * 4096))) == 1  # room for one more
    assert run(node.v1.chunks(other, IP, 4096)) == []
    clock.advance(INTERVAL)  # unanswered: expired at their deadline, no longer counted
    assert len(run(node.v1.chunks(other, IP, 2 * 4096))) == 2


def test_max_size_per_address_is_all_there_for_an_address_without_contracts(make):
    node = make(max_size_per_address=2 * 4096)
    token = run(node.v1.new_token(ADDRESS, IP))["token"]
    assert len(run(node.v1.chunks(token, IP, 2 * 4096))) == 2
    assert run(node.v1.chunks(token, IP, 4096)) == []


# --- the transactions, ended contracts, the token's address --------------------------------------------

def test_the_transaction_names_of_the_v1_store(node, clock):
    """They are the ``transaction`` label of the database metrics (docs/operations.md)."""
    seen: list[str] = []
    node.db.observers.append(lambda desc, elapsed, ok: seen.append(desc))
    seeded = node.stores.seeded
    token = run(node.v1.new_token(ADDRESS, IP))["token"]
    [c] = orjson.loads(orjson.dumps(run(node.v1.chunks(token, IP, 4096))))
    challenges_of(node.v1.challenges(token, None))
    report_of(node.v1.answer(token, IP, [{"file_hash": c["file_hash"], "proof": prove(c)}]))
    run(node.v1.tags(token))
    run(seeded.pool_counts())
    run(seeded.pool_add([], INTERVAL, clock.seconds()))
    run(seeded.expire(clock.seconds(), 10))
    run(seeded.shift_for_downtime(clock.seconds(), clock.seconds()))
    run(v1_deadline(seeded.db, c["file_hash"]))
    seq, sealed, _, _ = run(stored_state(seeded.db, c["file_hash"]))
    run(overwrite_state(seeded.db, c["file_hash"], seq, sealed))
    names = [n for n in seen if n.startswith("v1_")]
    assert names == ["v1_chunk", "v1_challenge", "v1_answer_read", "v1_answer", "v1_tags", "v1_pool_counts",
                     "v1_pool_add", "v1_expire", "v1_downtime", "v1_deadline", "v1_stored_state", "v1_overwrite_state"]


def test_a_challenge_for_a_contract_that_ended_says_expired(make, clock):
    node = make(late_grace=0)  # the expiration itself (the grace: tests/test_late_answers.py)
    token = run(node.v1.new_token(ADDRESS, IP))["token"]
    [c] = orjson.loads(orjson.dumps(run(node.v1.chunks(token, IP, 4096))))
    clock.advance(INTERVAL)
    assert run(node.expiry.expire()).failed == 1
    assert challenges_of(node.v1.challenges(token, [c["file_hash"]])) == [{"file_hash": c["file_hash"],
                                                                "error": "contract expired"}]
    # without ids: only the active ones
    assert challenges_of(node.v1.challenges(token, None)) == []


def test_an_answer_from_another_address_does_not_move_the_token(make):
    node = make(max_tokens_per_ip=1)
    token = run(node.v1.new_token(ADDRESS, "10.0.0.1"))["token"]
    [c] = orjson.loads(orjson.dumps(run(node.v1.chunks(token, "10.0.0.1", 4096))))
    report = report_of(node.v1.answer(token, "10.0.0.2", [{"file_hash": c["file_hash"], "proof": prove(c)}]))
    assert report == [{"file_hash": c["file_hash"], "status": "ok"}]
    # 10.0.0.2 still holds no token: a new one may be made there
    run(node.v1.new_token(make_address(2), "10.0.0.2"))
    # a chunk request does move it: 10.0.0.3 then holds one
    run(node.v1.chunks(token, "10.0.0.3", 4096))
    e = refused(node.v1.new_token(make_address(3), "10.0.0.3"))
    assert e.message == "IP Disallowed, only 1 tokens are permitted per IP address"


# --- the pool's records, the downtime marker -----------------------------------------------------------

def test_pool_records_are_frozen_and_a_taken_chunk_has_its_pool_id(node, tmp_path):
    import dataclasses

    from downstream_tx.db import seeded
    from support import add_test_file

    for record in (seeded.EncodedChunk("s", 1, "h", "{}", "{}"), seeded.PoolChunk(1, 2, 3, "s", "{}", "{}")):
        with pytest.raises(dataclasses.FrozenInstanceError):
            record.size = 5
    # another file first, so the pool's ids and the files' ids differ
    add_test_file(node, tmp_path, size=100)
    run(node.stores.seeded.pool_add([seeded.EncodedChunk("seed-x", 8192, "ab" * 32, "{}", "{}")], INTERVAL, 0.0))
    chunk = run(node.db.run("test_take", seeded.pool_take_txn, 8192))
    [f] = [f for f in run(node.stores.files.list_active("seeded")) if f["size"] == 8192]
    assert (chunk.file_id, chunk.size, chunk.seed) == (f["id"], 8192, "seed-x")
    assert chunk.id != chunk.file_id  # the pool row's own id


def test_the_downtime_marker_is_stored_under_its_name(node):
    """A database written by an earlier version keeps its marker: the name must not change."""
    from downstream_tx.db import meta, seeded

    assert run(node.stores.seeded.shift_for_downtime(100.0, 250.0)) == 0
    assert run(node.db.run("test_meta", meta.get_txn, "v1_shifted_until")) == b"250.0"
    assert seeded.SHIFTED_UNTIL == "v1_shifted_until"


def test_pool_add_skips_a_recorded_chunk_and_adds_the_rest(node):
    from downstream_tx.db import seeded

    a = seeded.EncodedChunk("seed-a", 8192, "aa" * 32, "{}", "{}")
    b = seeded.EncodedChunk("seed-b", 8192, "bb" * 32, "{}", "{}")
    store = node.stores.seeded
    assert run(store.pool_add([a], INTERVAL, 0.0)) == 1
    assert run(store.pool_add([a, b], INTERVAL, 0.0)) == 1  # a is recorded: skipped, b still added
    assert run(store.pool_counts()) == {4096: 6, 8192: 2}
