"""v1.pool.SeededPool directly, on each engine: encoded chunks are what a farmer regenerates, and
refill reaches the configured targets within its per-pass byte budget."""

from __future__ import annotations

import hashlib

import orjson
import pytest

from downstream_tx.heartbeat import Challenge, Merkle, RandomIO, State, Tag
from downstream_tx.v1 import pool as pool_module
from support import make_config, make_node, run


@pytest.fixture
def make(tmp_path, db_url, clock):
    made = []

    def factory(**overrides):
        values = {"seeded_pool": "4096:2", "seeded_challenges": 3, "seeded_interval": 60}
        values.update(overrides)
        node = make_node(make_config(tmp_path, db_url, **values), clock)
        made.append(node)
        return node

    yield factory
    for node in made:
        node.db.close()


def test_encode_chunks(make, clock):
    node = make()
    chunks = node.pool.encode_chunks(4096, 2, clock.seconds())
    assert len(chunks) == 2 and chunks[0].seed != chunks[1].seed
    key = node.keys.heartbeat_key()
    merkle = Merkle(node.config.seeded_check_fraction, key)
    for c in chunks:
        assert len(c.seed) == 32 and c.size == 4096
        data = RandomIO(c.seed, c.size).read_at(0, c.size)
        assert c.file_hash == hashlib.sha256(data).hexdigest()
        state = State.from_dict(orjson.loads(c.hb_state))
        tag = Tag.from_dict(orjson.loads(c.tag))
        challenge = merkle.gen_challenge(state)
        proof = Merkle(node.config.seeded_check_fraction, b"").prove(RandomIO(c.seed, c.size),
                                                                     Challenge.from_dict(challenge.to_dict()), tag)
        assert merkle.verify(proof, challenge, state)


def test_refill_reaches_the_targets(make):
    node = make(seeded_pool="4096:3,8192:1")
    assert run(node.pool.refill()) == 4
    assert run(node.stores.seeded.pool_counts()) == {4096: 3, 8192: 1}
    assert run(node.pool.refill()) == 0
    # handing chunks out makes room for new ones
    token = run(node.v1.new_token("19qVgG8C6eXwKMMyvVegsi3xCsKyk3Z3jV", None))["token"]
    assert len(run(node.v1.chunks(token, None, 8192))) == 1
    assert run(node.pool.refill()) == 1
    assert run(node.stores.seeded.pool_counts()) == {4096: 3, 8192: 1}


def test_refill_keeps_to_its_byte_budget_per_pass(make, monkeypatch):
    monkeypatch.setattr(pool_module, "POOL_PASS_BYTES", 3 * 4096)
    node = make(seeded_pool="4096:5,8192:2")
    assert run(node.pool.refill()) == 3  # 3 x 4096: the budget
    assert run(node.stores.seeded.pool_counts()) == {4096: 3}
    assert run(node.pool.refill()) == 3  # the last 2 x 4096, then one 8192 (a pass makes at least one)
    assert run(node.stores.seeded.pool_counts()) == {4096: 5, 8192: 1}
    assert run(node.pool.refill()) == 1
    assert run(node.pool.refill()) == 0
    assert run(node.stores.seeded.pool_counts()) == {4096: 5, 8192: 2}
