"""Pins for the v1 answer path (issue 16, mutation scores): v1/wire, v1/farming and db/seeded.
Each test pins a behaviour a surviving mutant changed without any other test of the module noticing;
the quick ones come first, so the mutation runner runs this file first."""

from __future__ import annotations

import inspect
from decimal import Decimal

import orjson
import pytest
from twisted.logger import LogLevel, formatEvent

from downstream_tx import bitcoin
from downstream_tx import wire as shared
from downstream_tx.core import tokens
from downstream_tx.db.seeded import PoolChunk, V1Contract
from downstream_tx.db.tokens import TokenFacts
from downstream_tx.errors import NodeError
from downstream_tx.heartbeat import HeartbeatError, Proof
from downstream_tx.v1 import farming, wire
from downstream_tx.v1.farming import V1Farming
from support import ADDRESS, challenges_of, make_address, make_config, report_of, run
from support.stored import overwrite_state, stored_state, v1_deadline
from support.v1 import INTERVAL, SIGNATURE, prove

BAD = "1BoatSLRHtKNngkdXEeobR76b53LETtpyX"  # a checksum error


# --- wire ----------------------------------------------------------------------------------------------

def test_wire_constants():
    assert shared.V1_PREFIX == "/api/downstream/v1"
    assert shared.HEARTBEAT_TYPE == wire.HEARTBEAT_TYPE == "Merkle"
    # /chunk without a size asks for 32 MiB (the original's default)
    assert shared.DEFAULT_CHUNK_SIZE == 32 * 1024 * 1024
    assert inspect.signature(V1Farming.chunks).parameters["size"].default == 32 * 1024 * 1024
    assert shared.MAX_ITEMS == wire.MAX_ITEMS == 5000


def refusal(facts: TokenFacts, config) -> NodeError:
    with pytest.raises(NodeError) as e:
        wire.TOKEN_RULES.admit(facts, config)
    return e.value


def test_v1_token_rules_words(tmp_path):
    config = make_config(tmp_path, whitelist=True, min_balance=100, max_tokens_per_ip=3, max_tokens_per_address=2)
    assert wire.TOKEN_RULES.name == "v1"
    assert wire.TOKEN_RULES.order == (tokens.IP_LIMIT, tokens.INVALID_ADDRESS, tokens.NOT_WHITELISTED,
                                      tokens.LOW_BALANCE, tokens.ADDRESS_LIMIT)
    e = refusal(TokenFacts(ADDRESS, 100, 2, 0), config)
    assert (e.kind, e.status, e.message) == ("invalid", "error",
                                             "Address limit reached, only 2 tokens are permitted per address")
    e = refusal(TokenFacts(ADDRESS, 100, 0, 3), config)
    assert (e.kind, e.status, e.message) == ("invalid", "error",
                                             "IP Disallowed, only 3 tokens are permitted per IP address")
    e = refusal(TokenFacts(BAD, 100, 0, 0), config)
    assert (e.kind, e.status, e.message) == ("invalid", "error", wire.MSG_BAD_ADDRESS)
    assert refusal(TokenFacts(ADDRESS, None, 0, 0), config).message == wire.MSG_NOT_WHITELISTED
    assert refusal(TokenFacts(ADDRESS, 99, 0, 0), config).message == wire.MSG_NOT_WHITELISTED
    assert wire.TOKEN_RULES.admit(TokenFacts(ADDRESS, 100, 1, 2), config) is None


def test_v1_messages():
    assert shared.NONEXISTENT_TOKEN == "Nonexistent token."
    assert wire.NONEXISTENT_FARMER == "Nonexistant farmer id."
    assert wire.MSG_BAD_ADDRESS == "Invalid address given: address is not a valid SJCX address."
    assert wire.MSG_NOT_WHITELISTED == "Invalid address given: address must be in whitelist."
    assert wire.MSG_INVALID_SORT == "Invalid sort."
    assert wire.MSG_SIGNATURE_INVALID == "Signature invalid."
    assert wire.MSG_SIGNATURE_LENGTH == "Your signature is the wrong length.  It should be 88bytes."
    e = wire.v1_error("x")
    assert (e.kind, e.status, e.message) == ("invalid", "error", "x")
    e = wire.v1_error("y", "not_found")
    assert (e.kind, e.status, e.message) == ("not_found", "error", "y")


def test_heartbeat_body():
    assert wire.heartbeat_body("t", 0.25) == {"token": "t", "type": "Merkle",
                                               "heartbeat": {"key": "", "check_fraction": 0.25}}


def test_iso_utc():
    from downstream_tx.times import iso_utc

    assert iso_utc(None) is None
    assert iso_utc(0) == "1970-01-01T00:00:00Z"
    assert iso_utc(1_700_000_000.9) == "2023-11-14T22:13:20Z"


@pytest.mark.parametrize("item, value", [(7, 7), ("8", 8), (" 9 ", 9), (True, 1), (Decimal("3.9"), 3), (2.5, 2)])
def test_as_int(item, value):
    assert wire.as_int(item) == value


@pytest.mark.parametrize("item, error", [({}, TypeError), ([], TypeError), (None, TypeError), ({"a": 1}, TypeError),
                                         ([1], TypeError), ("x", ValueError), ("1.5", ValueError)])
def test_as_int_refuses(item, error):
    with pytest.raises(error):
        wire.as_int(item)


@pytest.mark.parametrize("item", [{}, [], None, {"a": 1}, [1]])
def test_as_int_refuses_containers_and_null_itself(item):
    with pytest.raises(TypeError, match="^not a number$"):
        wire.as_int(item)


def test_contract_ids_stops_reading_at_max_items():
    """A streamed body is not read past the bound (nor is an endless one)."""
    taken = []

    def endless():
        n = 1
        while True:
            assert len(taken) <= wire.MAX_ITEMS, "read past the bound"
            taken.append(n)
            yield n
            n += 1

    got = wire.contract_ids(endless(), lambda item: item)
    assert len(got) == wire.MAX_ITEMS and len(taken) == wire.MAX_ITEMS + 1


def test_contract_ids():
    # as sent, the id, the item; duplicates collapse, the first wins
    items = [{"file_hash": "5", "n": 1}, {"file_hash": 5, "n": 2}, {"file_hash": 6}]
    assert wire.contract_ids(items, wire.proof_key) == [("5", 5, items[0]), (6, 6, items[2])]
    # each error ends the list
    for bad in ([1, [2], 3], [1, "x", 3], [1, float("inf"), 3], [1, None, 3]):
        assert wire.contract_ids(bad, lambda item: item) == [(1, 1, 1)]
    assert wire.contract_ids([{"file_hash": 1}, {"x": 2}, {"file_hash": 3}], wire.proof_key) == [
        (1, 1, {"file_hash": 1})]
    assert wire.contract_ids([{"file_hash": 1}, 7, {"file_hash": 3}], wire.proof_key) == [(1, 1, {"file_hash": 1})]
    assert wire.contract_ids([], lambda item: item) == []
    # the bound counts items looked at, not ids kept
    assert len(wire.contract_ids([1] * 4999 + [2, 3], lambda item: item)) == 2


def test_proof_key():
    assert wire.proof_key({"file_hash": 3, "proof": {}}) == 3
    for item in ([("file_hash", 3)], "file_hash", 3, None):
        with pytest.raises(TypeError, match="^a proof item must be an object$"):
            wire.proof_key(item)
    with pytest.raises(KeyError):
        wire.proof_key({"proof": {}})


def test_plain():
    assert wire.plain(Decimal("1.5")) == 1.5 and type(wire.plain(Decimal("1.5"))) is float
    assert wire.plain(5) == 5 and wire.plain(True) is True and wire.plain("x") == "x"
    for n in (-(1 << 63), (1 << 64) - 1, 0):
        assert wire.plain(n) == n and type(wire.plain(n)) is int
    for n in (1 << 64, -(1 << 63) - 1, 10**30):
        frag = wire.plain(n)
        assert isinstance(frag, orjson.Fragment) and orjson.dumps([frag]) == f"[{n}]".encode()


# --- farming -------------------------------------------------------------------------------------------

IP = "10.1.2.3"


@pytest.fixture
def make(seeded_nodes):
    return seeded_nodes


@pytest.fixture
def node(make):
    return make()


def refused(d) -> NodeError:
    with pytest.raises(NodeError) as e:
        run(d)
    return e.value


@pytest.mark.parametrize("message, signature", [("m", None), (None, SIGNATURE), (None, None)])
def test_a_signed_new_token_needs_both_message_and_signature(make, message, signature):
    node = make(require_signature=True, signature_names_node=False)
    e = refused(node.v1.new_token(ADDRESS, IP, message, signature))
    assert (e.kind, e.status, e.message) == ("invalid", "error", wire.MSG_POST_JSON)


def test_an_unusable_pooled_chunk_is_logged_and_gives_no_challenge(node, monkeypatch):
    events: list[dict] = []
    monkeypatch.setattr(farming.log, "observer", events.append)
    chunk = PoolChunk(id=1, file_id=77, size=4096, seed="s", hb_state="not json", tag="{}")
    assert node.v1._first_challenge(chunk) is None
    [event] = events
    assert event["log_level"] == LogLevel.warn
    assert formatEvent(event).startswith("pooled seeded chunk 77 is unusable (")
    assert formatEvent(event).endswith("); discarded")


def test_no_more_challenges_for_one_contract_does_not_end_the_list(node, clock):
    token = run(node.v1.new_token(ADDRESS, IP))["token"]
    a, b = orjson.loads(orjson.dumps(run(node.v1.chunks(token, IP, 8192))))
    report = report_of(node.v1.answer(token, IP, [{"file_hash": a["file_hash"], "proof": prove(a)},
                                            {"file_hash": b["file_hash"], "proof": prove(b)}]))
    assert [r.get("status") for r in report] == ["ok", "ok"]
    clock.advance(INTERVAL)  # both due: a new challenge each
    seq, sealed, _, _ = run(stored_state(node.stores.seeded.db, a["file_hash"]))
    run(overwrite_state(node.stores.seeded.db, a["file_hash"], seq, sealed._replace(time="cut")))
    got = orjson.loads(orjson.dumps(challenges_of(node.v1.challenges(token, [a["file_hash"], b["file_hash"]]))))
    assert got[0] == {"file_hash": a["file_hash"], "status": "no more challenges"}
    assert got[1]["file_hash"] == b["file_hash"] and got[1]["answered"] is False and got[1]["due"] == INTERVAL
    assert "challenge" in got[1]


def test_an_unusable_stored_state_is_logged(node, monkeypatch):
    events: list[dict] = []
    monkeypatch.setattr(farming.log, "observer", events.append)
    c = V1Contract(id=42, state="active", due=1.0, deadline=2.0, answered=False, interval=60, seq=0, sealed=None,
                   hb_state="not json", hb_challenge=None)
    token = run(node.v1.new_token(ADDRESS, IP))["token"]
    [chunk] = orjson.loads(orjson.dumps(run(node.v1.chunks(token, IP, 4096))))
    proof = Proof.from_dict(prove(chunk))
    assert node.v1.verify(c, proof) is False
    [event] = events
    assert event["log_level"] == LogLevel.warn
    assert formatEvent(event).startswith("v1 contract 42: stored heartbeat state unusable (")


# --- seeded --------------------------------------------------------------------------------------------

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


def test_a_signed_message_of_exactly_the_size_limit_is_allowed(make):
    node = make(require_signature=True, signature_names_node=False)
    limit = bitcoin.MAX_MESSAGE_LENGTH
    # the size is checked first, then the signature's length
    e = refused(node.v1.new_token(ADDRESS, IP, "a" * limit, "short"))
    assert e.message == wire.MSG_SIGNATURE_LENGTH
    e = refused(node.v1.new_token(ADDRESS, IP, "a" * (limit + 1), "short"))
    assert e.message == wire.MSG_MESSAGE_SIZE


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


def test_max_size_per_address_is_all_there_for_an_address_without_contracts(make):
    node = make(max_size_per_address=2 * 4096)
    token = run(node.v1.new_token(ADDRESS, IP))["token"]
    assert len(run(node.v1.chunks(token, IP, 2 * 4096))) == 2
    assert run(node.v1.chunks(token, IP, 4096)) == []
