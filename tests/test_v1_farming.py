"""V1Farming called directly (no HTTP), on each engine, with a task.Clock: chunks, challenges,
answers, tags, heartbeat, unknown tokens, the per-address token limit, the 5,000-item bound, a
stored state that cannot be used, and the pass/fail results counted once."""

from __future__ import annotations

import orjson
import pytest
from twisted.internet import task
from twisted.internet.defer import succeed
from twisted.logger import LogLevel, formatEvent

from downstream_tx import bitcoin
from downstream_tx import wire as shared
from downstream_tx.db.seeded import PoolChunk, V1Contract
from downstream_tx.heartbeat import Proof
from downstream_tx.metrics import Metrics
from downstream_tx.v1 import farming, wire
from support import ADDRESS, challenges_of, make_address, refused, report_of, run
from support.stored import overwrite_state, stored_state
from support.v1 import INTERVAL, SIGNATURE, prove

IP = "10.1.2.3"


@pytest.fixture
def make(seeded_nodes):
    return seeded_nodes


@pytest.fixture
def node(make):
    return make()


def new_token(node, address=ADDRESS, ip=IP) -> str:
    return run(node.v1.new_token(address, ip))["token"]


def contract(node, cid: int) -> dict:
    [row] = [c for c in run(node.stores.contracts.all()) if c["id"] == cid]
    return row


def results_of(node) -> list[tuple[str, int, int]]:
    seen: list[tuple[str, int, int]] = []
    node.results.observers.append(lambda result, n, protocol: seen.append((result, n, protocol)))
    return seen


def test_new_token_and_heartbeat(node):
    body = run(node.v1.new_token(ADDRESS, IP))
    assert body == {"token": body["token"], "type": "Merkle",
                    "heartbeat": {"key": "", "check_fraction": node.config.seeded_check_fraction}}
    assert run(node.v1.heartbeat(body["token"].upper()))["token"] == body["token"]


@pytest.mark.parametrize("call", ["heartbeat", "tags"])
def test_unknown_or_malformed_token_is_nonexistent_404(node, call):
    for token in ("0" * 32, "not a token"):
        e = refused(getattr(node.v1, call)(token))
        assert (e.kind, e.status, e.message) == ("not_found", "error", shared.NONEXISTENT_TOKEN)


@pytest.mark.parametrize("call", ["chunks", "challenges", "answer"])
def test_unknown_token_is_nonexistent_400_on_farming_calls(node, call):
    args = {"chunks": (None,), "challenges": (None,), "answer": (None, [])}[call]
    for token in ("0" * 32, "xyz"):
        e = refused(getattr(node.v1, call)(token, *args))
        assert (e.kind, e.status, e.message) == ("invalid", "error", shared.NONEXISTENT_TOKEN)


def test_chunks_fit_the_requested_size(node, clock):
    token = new_token(node)
    assert run(node.v1.chunks(token, IP, 4095)) == []
    got = run(node.v1.chunks(token, IP, 8192 + 100))
    assert [c["size"] for c in got] == [4096, 4096]
    assert all(c["due"] == INTERVAL for c in got)
    assert len({c["file_hash"] for c in got}) == 2
    # the pool gave them away
    assert run(node.stores.seeded.pool_counts()) == {4096: 4}


def test_challenge_then_answer_then_tags(node, clock):
    token = new_token(node)
    [c] = run(node.v1.chunks(token, IP, 4096))
    cid = c["file_hash"]
    [entry] = orjson.loads(orjson.dumps(challenges_of(node.v1.challenges(token, [cid]))))
    assert entry["file_hash"] == cid and entry["answered"] is False
    assert entry["challenge"] == orjson.loads(orjson.dumps(c["challenge"]))
    proof = prove(orjson.loads(orjson.dumps(c)))
    assert report_of(node.v1.answer(token, IP, [{"file_hash": cid, "proof": proof}])) == [{"file_hash": cid,
                                                                                      "status": "ok"}]
    assert report_of(node.v1.answer(token, IP, [{"file_hash": cid, "proof": proof}])) == [
        {"file_hash": cid, "error": "Challenge already answered."}]
    row = contract(node, cid)
    assert (row["passes"], row["fails"]) == (1, 0)
    [tag] = run(node.v1.tags(token))
    assert tag["file_hash"] == cid
    # another token sees none of it
    other = new_token(node, make_address(3))
    assert run(node.v1.tags(other)) == []
    assert challenges_of(node.v1.challenges(other, [cid])) == [{"file_hash": cid, "error": "contract not found"}]


def test_answer_report_entries(node, clock):
    token = new_token(node)
    a, b = orjson.loads(orjson.dumps(run(node.v1.chunks(token, IP, 8192))))
    report = report_of(node.v1.answer(token, IP, [
        {"file_hash": a["file_hash"], "proof": {"nope": 1}},
        {"file_hash": 99999, "proof": prove(a)},
        {"file_hash": b["file_hash"], "proof": prove(a)},  # a's proof for b's challenge
    ]))
    assert report == [{"file_hash": a["file_hash"], "error": "Proof corrupted"},
                      {"file_hash": 99999, "error": "contract not found"},
                      {"file_hash": b["file_hash"], "error": "Invalid proof"}]
    clock.advance(3 * INTERVAL)
    assert report_of(node.v1.answer(token, IP, [{"file_hash": a["file_hash"], "proof": prove(a)}])) == [
        {"file_hash": a["file_hash"], "error": "Answer failed: contract expired."}]


def test_ip_limit_on_answer_and_chunks(make):
    node = make(max_tokens_per_ip=1)
    token = new_token(node, ip="10.0.0.1")
    new_token(node, make_address(2), ip="10.0.0.2")
    [c] = orjson.loads(orjson.dumps(run(node.v1.chunks(token, "10.0.0.1", 4096))))
    # the token used from an address that already holds the most tokens allowed
    e = refused(node.v1.answer(token, "10.0.0.2", [{"file_hash": c["file_hash"], "proof": prove(c)}]))
    assert (e.kind, e.message) == ("invalid", "IP Disallowed, only 1 tokens are permitted per IP address")
    e = refused(node.v1.chunks(token, "10.0.0.2", 4096))
    assert e.message == "IP Disallowed, only 1 tokens are permitted per IP address"
    assert report_of(node.v1.answer(token, "10.0.0.1", [{"file_hash": c["file_hash"], "proof": prove(c)}]))[0][
        "status"] == "ok"


# --- a stored state that cannot be used verifies nothing (issue 16, survivor 1) --------------------

def _two_contracts(node):
    token = new_token(node)
    a, b = orjson.loads(orjson.dumps(run(node.v1.chunks(token, IP, 8192))))
    return token, a, b


def corrupt(node, contract_id: int, what: str) -> None:
    """Spoil one part of a contract's stored heartbeat state (sealed, or as JSON like a row written
    before schema step 5)."""
    seeded = node.stores.seeded
    seq, sealed, _, _ = run(stored_state(seeded.db, contract_id))
    flip = {"seed": "seed", "root": "root", "hmac": "hmac"}
    if what in flip:
        value = bytearray(getattr(sealed, flip[what]))
        value[0] ^= 1
        sealed = sealed._replace(**{flip[what]: bytes(value)})
    elif what == "time":
        sealed = sealed._replace(time="not a number")
    elif what == "seq":
        seq += 1
    elif what == "json-state":
        assert run(overwrite_state(seeded.db, contract_id, seq, None, '{"index": 1, "seed": "', '{}')) == 1
        return
    elif what == "json-challenge":
        state = orjson.dumps(unseal_row(seq, sealed)[0].to_dict()).decode()
        assert run(overwrite_state(seeded.db, contract_id, seq, None, state, '{"index": "x"}')) == 1
        return
    assert run(overwrite_state(seeded.db, contract_id, seq, sealed)) == 1


def unseal_row(seq, sealed):
    from downstream_tx.db.seeded import V1Contract
    from downstream_tx.v1.farming import unseal

    return unseal(V1Contract(1, "active", None, 0.0, False, 1, seq, sealed))


@pytest.mark.parametrize("what", ["seed", "root", "hmac", "time", "seq", "json-state", "json-challenge"])
def test_a_corrupt_stored_state_reports_invalid_proof_and_counts_a_fail(node, what):
    token, a, b = _two_contracts(node)
    seen = results_of(node)
    corrupt(node, a["file_hash"], what)
    report = report_of(node.v1.answer(token, IP, [{"file_hash": a["file_hash"], "proof": prove(a)},
                                            {"file_hash": b["file_hash"], "proof": prove(b)}]))
    # the same kind of proof passes on the untouched contract
    assert report == [{"file_hash": a["file_hash"], "error": "Invalid proof"},
                      {"file_hash": b["file_hash"], "status": "ok"}]
    assert (contract(node, a["file_hash"])["passes"], contract(node, a["file_hash"])["fails"]) == (0, 1)
    assert seen == [("pass", 1, 1), ("fail", 1, 1)]


def test_a_contract_stored_before_schema_step_5_keeps_farming_and_becomes_sealed(node, clock):
    """A row with its state and challenge as JSON (as every row was before the sealed columns) is
    answered and refreshed like any other; its first refresh stores it sealed."""
    token, a, b = _two_contracts(node)
    seeded = node.stores.seeded
    seq, sealed, _, _ = run(stored_state(seeded.db, a["file_hash"]))
    state, challenge = unseal_row(seq, sealed)
    assert run(overwrite_state(seeded.db, a["file_hash"], seq, None, orjson.dumps(state.to_dict()).decode(),
                                      orjson.dumps(challenge.to_dict()).decode())) == 1
    report = report_of(node.v1.answer(token, IP, [{"file_hash": c["file_hash"], "proof": prove(c)} for c in (a, b)]))
    assert [r.get("status") for r in report] == ["ok", "ok"]
    clock.advance(INTERVAL)
    fresh = orjson.loads(orjson.dumps(challenges_of(node.v1.challenges(token, None))))
    assert [e["file_hash"] for e in fresh] == [a["file_hash"], b["file_hash"]]
    stored = run(stored_state(seeded.db, a["file_hash"]))
    assert stored[0] == seq + 1 and stored[1] is not None and stored[2:] == (None, None)
    report = report_of(node.v1.answer(token, IP, [{"file_hash": e["file_hash"], "proof": prove(c, e["challenge"])}
                                            for e, c in zip(fresh, (a, b))]))
    assert [r.get("status") for r in report] == ["ok", "ok"]
    assert contract(node, a["file_hash"])["passes"] == 2


@pytest.mark.parametrize("change", ["answered", "expired"])
def test_a_contract_changed_between_the_read_and_the_write_is_not_counted(node, clock, change):
    """/answer verifies outside any transaction: what happens to a contract meanwhile (the same
    answer recorded by a concurrent request, or its expiration) decides its report entry."""
    token, a, b = _two_contracts(node)
    seeded = node.stores.seeded
    read = seeded.contracts

    def read_then_change(token_hash, ids):
        found = run(read(token_hash, ids))
        seeded.contracts = read
        if change == "answered":
            # the same proof for ``a``, recorded by another request in between
            assert report_of(node.v1.answer(token, IP, [{"file_hash": a["file_hash"], "proof": prove(a)}]))[0] == {
                "file_hash": a["file_hash"], "status": "ok"}
        else:  # the expiry job ended both (the request's own time still decides the rest)
            clock.advance(INTERVAL + node.config.late_grace)  # the job waits late_grace past the expiration
            assert run(node.expiry.expire()).failed == 2
        return succeed(found)

    seeded.contracts = read_then_change
    seen = results_of(node)
    report = report_of(node.v1.answer(token, IP, [{"file_hash": c["file_hash"], "proof": prove(c)} for c in (a, b)]))
    if change == "answered":
        assert report == [{"file_hash": a["file_hash"], "error": "Challenge already answered."},
                          {"file_hash": b["file_hash"], "status": "ok"}]
        assert seen == [("pass", 1, 1), ("fail", 0, 1)] * 2  # each request counts its own pass once
        assert contract(node, a["file_hash"])["passes"] == 1
    else:
        assert report == [{"file_hash": c["file_hash"], "error": "Answer failed: contract expired."} for c in (a, b)]
        assert [contract(node, c["file_hash"])["passes"] for c in (a, b)] == [0, 0]
    assert contract(node, a["file_hash"])["fails"] == 0


def test_a_state_made_with_another_node_secret_verifies_nothing(make):
    ours, theirs = make(), make("theirs")
    assert ours.keys.secret != theirs.keys.secret
    token, a, _ = _two_contracts(ours)
    their_token = new_token(theirs)
    [t] = orjson.loads(orjson.dumps(run(theirs.v1.chunks(their_token, IP, 4096))))
    # their chunk, state and challenge on our contract: the proof is right for them
    seq, sealed, _, _ = run(stored_state(theirs.stores.seeded.db, t["file_hash"]))
    run(overwrite_state(ours.stores.seeded.db, a["file_hash"], seq, sealed))
    report = report_of(ours.v1.answer(token, IP, [{"file_hash": a["file_hash"], "proof": prove(t)}]))
    assert report == [{"file_hash": a["file_hash"], "error": "Invalid proof"}]
    assert (contract(ours, a["file_hash"])["passes"], contract(ours, a["file_hash"])["fails"]) == (0, 1)
    # the very same proof is right where the state was made
    assert report_of(theirs.v1.answer(their_token, IP, [{"file_hash": t["file_hash"], "proof": prove(t)}])) == [
        {"file_hash": t["file_hash"], "status": "ok"}]


# --- the pass/fail results, each counted exactly once (issue 16, survivor 7) -----------------------

def test_v1_results_are_counted_once_per_proof(node):
    metrics = Metrics(task.Clock())
    node.results.observers.append(metrics.count_result)
    seen = results_of(node)
    token = new_token(node)
    chunks = orjson.loads(orjson.dumps(run(node.v1.chunks(token, IP, 3 * 4096))))
    a, b, c = chunks
    report_of(node.v1.answer(token, IP, [{"file_hash": a["file_hash"], "proof": prove(a)},
                                   {"file_hash": b["file_hash"], "proof": prove(b)},
                                   {"file_hash": c["file_hash"], "proof": prove(a)}]))
    assert seen == [("pass", 2, 1), ("fail", 1, 1)]
    # answered already: neither a pass nor a fail
    report_of(node.v1.answer(token, IP, [{"file_hash": a["file_hash"], "proof": prove(a)}]))
    assert seen[2:] == [("pass", 0, 1), ("fail", 0, 1)]
    text = metrics.render().decode()
    assert 'downstream_challenge_results_total{protocol="v1",result="pass"} 2.0' in text
    assert 'downstream_challenge_results_total{protocol="v1",result="fail"} 1.0' in text


# --- at most 5,000 items of one /challenge or /answer are looked at (issue 16, survivor 4) ---------

def test_contract_ids_looks_at_exactly_max_items():
    assert shared.MAX_ITEMS == 5000
    ids = wire.contract_ids(range(1, 5002), lambda item: item)
    assert len(ids) == 5000 and ids[-1] == (5000, 5000, 5000)
    assert [cid for _, cid, _ in wire.contract_ids(range(1, 5001), lambda item: item)][-1] == 5000
    # duplicates count against the bound
    assert len(wire.contract_ids([7] * 4999 + [8, 9], lambda item: item)) == 2


def test_contract_ids_ends_at_the_first_item_that_is_not_a_number():
    got = wire.contract_ids([1, "2", 2, None, 3], lambda item: item)
    assert [(sent, cid) for sent, cid, _ in got] == [(1, 1), ("2", 2)]
    assert wire.contract_ids([{"file_hash": 1}, {"x": 2}, {"file_hash": 3}], wire.proof_key)[-1][1] == 1


def test_the_5001st_item_of_an_answer_is_ignored(node):
    token = new_token(node)
    [c] = orjson.loads(orjson.dumps(run(node.v1.chunks(token, IP, 4096))))
    filler = [{"file_hash": 10_000_000 + n, "proof": {}} for n in range(shared.MAX_ITEMS - 1)]
    last = {"file_hash": c["file_hash"], "proof": prove(c)}
    report = report_of(node.v1.answer(token, IP, [*filler, {"file_hash": 9_999_999, "proof": {}}, last]))
    assert len(report) == shared.MAX_ITEMS and c["file_hash"] not in [r["file_hash"] for r in report]
    report = report_of(node.v1.answer(token, IP, [*filler, last]))
    assert len(report) == shared.MAX_ITEMS and report[-1] == {"file_hash": c["file_hash"], "status": "ok"}


def test_the_5001st_item_of_a_challenge_request_is_ignored(node):
    token = new_token(node)
    [c] = run(node.v1.chunks(token, IP, 4096))
    filler = list(range(10_000_000, 10_000_000 + shared.MAX_ITEMS - 1))
    got = challenges_of(node.v1.challenges(token, [*filler, 9_999_999, c["file_hash"]]))
    assert len(got) == shared.MAX_ITEMS and got[-1] == {"file_hash": 9_999_999, "error": "contract not found"}
    got = challenges_of(node.v1.challenges(token, [*filler, c["file_hash"]]))
    assert len(got) == shared.MAX_ITEMS and got[-1]["file_hash"] == c["file_hash"] and "challenge" in got[-1]


# --- new tokens, unusable chunks and states, the end of a challenge list -------------------------------

@pytest.mark.parametrize("message, signature", [("m", None), (None, SIGNATURE), (None, None)])
def test_a_signed_new_token_needs_both_message_and_signature(make, message, signature):
    node = make(require_signature=True, signature_names_node=False)
    e = refused(node.v1.new_token(ADDRESS, IP, message, signature))
    assert (e.kind, e.status, e.message) == ("invalid", "error", wire.MSG_POST_JSON)


def test_a_signed_message_of_exactly_the_size_limit_is_allowed(make):
    node = make(require_signature=True, signature_names_node=False)
    limit = bitcoin.MAX_MESSAGE_LENGTH
    # the size is checked first, then the signature's length
    e = refused(node.v1.new_token(ADDRESS, IP, "a" * limit, "short"))
    assert e.message == wire.MSG_SIGNATURE_LENGTH
    e = refused(node.v1.new_token(ADDRESS, IP, "a" * (limit + 1), "short"))
    assert e.message == wire.MSG_MESSAGE_SIZE


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
