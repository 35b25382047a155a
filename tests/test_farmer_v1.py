"""The farmer client on protocol v1, in-process against the node's own Klein resource (StubTreq, one
task.Clock), on both engines: heartbeats the node counts, restarts that resume from disk, a node
that is down or busy, a token the node no longer knows, lost data, a full disk, ``--number``."""

from __future__ import annotations

import errno
import hashlib
import json
import os

import orjson
import pytest

from downstream_tx import bitcoin
from downstream_tx.farmer import v1 as farmer_v1
from downstream_tx.farmer.chunks import RandomIO
from downstream_tx.farmer.files import SignedMessage
from support import ADDRESS, StubClient, make_resource, run
from support.farmer import FaultyNode, InProcessFarm
from support.v1 import INTERVAL, SIG_MESSAGE, SIGNATURE

NAMED_NODE = "http://node.example:5000"

CHUNK = 4096


def node_status(node, token: str) -> dict:
    """What the node's status API says of the farmer."""
    farmer_id = hashlib.sha256(bytes.fromhex(token)).hexdigest()[:20]
    return StubClient(make_resource(node)).get(f"/api/downstream/v1/status/show/{farmer_id}").json()


def heartbeats_at_node(node, token: str) -> int:
    return node_status(node, token)["heartbeats"]


@pytest.fixture
def faulty(seeded_nodes):
    node = seeded_nodes()
    return node, FaultyNode(make_resource(node))


def start(tmp_path, node, clock, faulty=None, **kw) -> InProcessFarm:
    kw.setdefault("size", 4 * CHUNK)
    kw.setdefault("protocol", "v1")
    return InProcessFarm(tmp_path, node, clock, resource=faulty, **kw).start()


def test_a_farmer_earns_every_heartbeat_and_the_node_counts_them(tmp_path, clock, faulty):
    node, resource = faulty
    farm = start(tmp_path, node, clock, resource)
    farm.pump(3.5 * INTERVAL, step=1)
    farmer = farm.farmer
    assert farmer.state == "farming" and farmer.error is None
    assert len(farmer.book) == 4
    passed = farmer.results["v1"][0]
    assert passed == 4 * 4  # 4 contracts x (their first challenge + 3 more): all 4 of each
    assert heartbeats_at_node(node, farmer.token) == passed
    # the files on disk, and nothing of a tag or a proof kept in memory
    assert farm.files() == ["state.json"] + sorted(f"v1-{n}.{s}" for n in range(1, 5) for s in ("chunk", "tag"))
    for c in farmer.book.contracts.values():
        assert c.stored and c.tag is None and c.problem is None
        with open(farmer.book.path(c, ".chunk"), "rb") as fh:
            assert fh.read() == RandomIO(c.seed).read_at(0, c.size)
    session = farmer.sessions[0]
    assert session.ready == {} and session.working == 0
    assert farm.stop() == 0


def test_the_requests_are_the_published_clients(tmp_path, clock, faulty):
    """The shapes downstream-farmer 0.1.8 sends (its client.py): GET /new, GET /chunk/<token>/<size>,
    POST /answer with {"proofs": [...]} and the bogus Content-Encoding: gzip over plain JSON, POST
    /challenge with {"hashes": [...]}; contract ids echoed with their JSON type."""
    node, resource = faulty
    farm = start(tmp_path, node, clock, resource)
    farm.pump(INTERVAL + 5, step=1)
    token = farm.farmer.token
    seen = {(m, p.replace(token, "<token>").split("/api/downstream/v1")[-1].rstrip("/0123456789"))
            for m, p, _, _ in resource.requests}
    assert {("GET", "/new/" + ADDRESS), ("GET", "/chunk/<token>"), ("POST", "/answer/<token>"),
            ("POST", "/challenge/<token>")} <= seen
    for _, path, headers, body in resource.requests:
        if path.endswith(f"/answer/{token}"):
            assert headers["content-encoding"] == "gzip" and headers["content-type"] == "application/json"
            proofs = orjson.loads(body)["proofs"]
            assert all(set(p) == {"file_hash", "proof"} and type(p["file_hash"]) is int for p in proofs)
            assert all(set(p["proof"]) == {"leaf", "branch"} for p in proofs)
        if path.endswith(f"/challenge/{token}"):
            assert set(orjson.loads(body)) == {"hashes"}
            assert all(type(h) is int for h in orjson.loads(body)["hashes"])
    farm.stop()


def test_a_restarted_farmer_resumes_every_contract_from_disk(tmp_path, clock, faulty):
    node, resource = faulty
    farm = start(tmp_path, node, clock, resource)
    farm.pump(INTERVAL / 2, step=1)
    first = farm.farmer
    held = {c.id: c.seed for c in first.book.contracts.values()}
    token = first.token
    assert len(held) == 4 and farm.stop() == 0
    with open(tmp_path / "farmer" / "history.json") as fh:  # the 2015 history format
        assert json.load(fh)["nodes"]["http://node.test"] == {"token": token, "address": ADDRESS}
    before = len(resource.requests)
    again = farm.restarted()
    again.start()
    again.pump(2.5 * INTERVAL, step=1)
    second = again.farmer
    assert second.token == token
    assert {c.id: c.seed for c in second.book.contracts.values()} == held
    later = [p for _, p, _, _ in resource.requests[before:]]
    assert not [p for p in later if "/new/" in p or "/chunk/" in p]  # nothing new asked for
    assert any(f"/heartbeat/{token}" in p for p in later)
    assert heartbeats_at_node(node, token) == first.results["v1"][0] + second.results["v1"][0] == 4 * 3
    again.stop()


def test_a_node_down_or_busy_is_waited_for_with_backoff_and_no_contract_is_lost(tmp_path, clock, faulty):
    node, resource = faulty
    farm = start(tmp_path, node, clock, resource)
    farm.pump(5, step=1)
    farmer = farm.farmer
    held = set(c.id for c in farmer.book.contracts.values())
    resource.mode = "503"
    resource.retry_after = "20"
    n = len(resource.requests)
    farm.pump(INTERVAL, step=0.5)
    busy = resource.requests[n:]
    # Retry-After honoured: at most one request per 20 s (and the rest spread by jitter)
    assert 1 <= len(busy) <= INTERVAL // 20 + 1
    assert farmer.down is not None and set(c.id for c in farmer.book.contracts.values()) == held
    resource.mode = "drop"  # then not answering at all: exponential backoff with jitter
    n = len(resource.requests)
    farm.pump(INTERVAL, step=0.5)
    assert 2 <= len(resource.requests) - n <= 12
    resource.mode = None
    farm.pump(2 * INTERVAL, step=0.5)  # the backoff's last wait (at most 64 s after 7 failures) ends
    assert farmer.down is None
    # here only the farmer's requests were refused (the node's timer ran on), so due times passed
    # meanwhile count at the node: what the farmer counted, the node counted (a real node restart,
    # with its downtime given back and no contract dropped: tests/test_farmer_e2e.py)
    assert heartbeats_at_node(node, farmer.token) == farmer.results["v1"][0] > 0
    farm.stop()


def test_a_token_the_node_forgot_stops_that_node_with_what_to_do_and_forcenew_starts_again(tmp_path, clock, faulty):
    node, resource = faulty
    farm = start(tmp_path, node, clock, resource)
    farm.pump(5, step=1)
    farmer = farm.farmer
    old = farmer.token
    run(node.farmers.delete_token(old))
    farm.pump(INTERVAL + 5, step=1)
    assert farmer.state == "failed"
    assert "does not know the token of farmer" in farmer.error and "--forcenew" in farmer.error
    assert old not in farmer.error  # the token is a secret: the farmer id names it
    assert run(farm.farm.done) == 1  # no node left
    # a restart without --forcenew says the same, with the contracts still on disk
    again = farm.restarted()
    again.start()
    again.pump(2, step=1)
    assert again.farmer.state == "failed" and "--forcenew" in again.farmer.error
    assert len(again.farmer.book) == 4
    fresh = farm.restarted(forcenew=True)
    fresh.start()
    fresh.pump(INTERVAL + 5, step=1)
    assert fresh.farmer.state == "farming" and fresh.farmer.token != old
    assert fresh.farmer.book.farmer_id == fresh.farmer.farmer_id
    assert len(fresh.farmer.book) == 2  # the seeded pool had 6 chunks: 2 left for the new token
    assert fresh.farmer.results["v1"][0] >= 2
    fresh.stop()


@pytest.mark.parametrize("harm", ["delete", "damage"])
def test_lost_data_is_said_and_never_answered_and_the_node_fails_the_contract(tmp_path, clock, faulty, harm):
    node, resource = faulty
    farm = start(tmp_path, node, clock, resource)
    farm.pump(5, step=1)
    farmer = farm.farmer
    victim = farmer.book.get("v1", 1)
    path = farmer.book.path(victim, ".chunk")
    if harm == "delete":
        os.unlink(path)
    else:
        with open(path, "r+b") as fh:
            data = fh.read()
            fh.seek(0)
            fh.write(bytes(b ^ 0x5A for b in data))
    n = len(resource.requests)
    farm.pump(INTERVAL + 10, step=1)
    assert victim.problem is not None
    assert ("missing" in victim.problem) if harm == "delete" else ("do not match" in victim.problem)
    sent = [orjson.loads(body) for _, p, _, body in resource.requests[n:] if "/answer/" in p]
    assert not [p for b in sent for p in b["proofs"] if p["file_hash"] == 1]  # never a proof it cannot back
    # the node ended it (a miss, its containment off here) and the farmer dropped it; the others pass
    farm.pump(INTERVAL, step=1)
    assert farmer.book.get("v1", 1) is None and farmer.state == "farming"
    shown = node_status(node, farmer.token)
    assert shown["audits"]["misses"] == 1 and shown["audits"]["fails"] == 0  # missed, not a wrong proof
    ask = StubClient(make_resource(node)).get(f"/api/downstream/v1/challenge/{farmer.token}/1").json()
    assert ask == {"challenges": [{"file_hash": 1, "error": "contract expired"}]}
    # the farmer took another contract in its place, and the others kept passing
    assert len(farmer.book) == 4 and farmer.results["v1"][0] >= 3 + 3
    farm.stop()


def test_a_full_disk_takes_no_contract_it_cannot_store(tmp_path, clock, faulty, monkeypatch):
    node, resource = faulty

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(farmer_v1, "write_seeded", full)
    farm = start(tmp_path, node, clock, resource)
    farm.pump(3, step=1)
    farmer = farm.farmer
    assert farmer.disk_full and len(farmer.book) == 0
    asked = len(resource.paths("/chunk/"))
    farm.pump(1, step=1)
    assert len(resource.paths("/chunk/")) == asked  # no more chunks asked for until chunk_retry
    monkeypatch.undo()
    farm.pump(10, step=1)  # after chunk_retry (5 s) there is room again
    assert not farmer.disk_full and len(farmer.book) > 0
    farm.stop()


def test_number_stops_after_that_many_answers(tmp_path, clock, faulty):
    node, resource = faulty
    farm = start(tmp_path, node, clock, resource, number=6)
    farm.pump(2 * INTERVAL + 5, step=1)
    assert farm.farm.done.called and run(farm.farm.done) == 0
    assert 6 <= farm.farm.passed <= 8


def test_signed_token_from_the_identity_file(tmp_path, clock, seeded_nodes):
    """The identity file's message names the node (its public URL), as a node requiring signatures
    asks by default (``signature_names_node``): the farmer sends it as it is and farms."""
    node = seeded_nodes(require_signature=True, public_url=NAMED_NODE)
    message = f"I farm for {NAMED_NODE}"
    address, signature = bitcoin.sign_message(bytes(range(1, 33)), message)
    ids = tmp_path / "farmer" / "identities.json"
    ids.parent.mkdir()
    ids.write_text(json.dumps({address: {"message": message, "signature": signature}}))
    resource = FaultyNode(make_resource(node))
    farm = start(tmp_path, node, clock, resource, address=None)  # the identity file's address
    farm.pump(5, step=1)
    assert farm.farmer.state == "farming" and farm.farmer.address == address
    [(method, _, headers, body)] = [r for r in resource.requests if "/new/" in r[1]]
    assert method == "POST" and json.loads(body) == {"message": message, "signature": signature}
    farm.stop()


def test_a_signed_message_naming_no_node_is_refused_by_a_node_that_asks_for_its_name(tmp_path, clock,
                                                                                     seeded_nodes):
    node = seeded_nodes(require_signature=True, public_url=NAMED_NODE)
    ids = tmp_path / "farmer" / "identities.json"
    ids.parent.mkdir()
    ids.write_text(json.dumps({ADDRESS: {"message": SIG_MESSAGE, "signature": SIGNATURE}}))
    resource = FaultyNode(make_resource(node))
    farm = start(tmp_path, node, clock, resource, address=None)
    farm.pump(5, step=1)
    assert farm.farmer.state == "failed" and NAMED_NODE in farm.farmer.error  # the node says what to sign
    farm.stop()


def test_a_signature_that_does_not_match_is_refused_before_it_is_sent(tmp_path, clock, seeded_nodes):
    node = seeded_nodes(require_signature=True, signature_names_node=False)
    resource = FaultyNode(make_resource(node))
    farm = start(tmp_path, node, clock, resource, per_node={"signed": SignedMessage("test messagf", SIGNATURE)})
    farm.pump(2, step=1)
    assert farm.farmer.state == "failed" and "does not match" in farm.farmer.error
    assert not resource.paths("/new/")


def test_a_node_without_a_protocol_list_is_farmed_with_v1(tmp_path, clock, seeded_nodes):
    """The 2015 node has no ``GET /`` protocol list: the farmer falls back to v1."""
    node = seeded_nodes()
    resource = FaultyNode(make_resource(node))

    def no_index(request):
        if request.path == b"/":
            request.setResponseCode(404)
            return b"<html>Not Found</html>"
        return None

    resource.override = no_index
    farm = start(tmp_path, node, clock, resource, protocol="auto")
    farm.pump(3, step=1)
    assert farm.farmer.protocols == ["v1"] and farm.farmer.state == "farming"
    farm.stop()


def test_asking_for_a_protocol_the_node_does_not_speak_says_so(tmp_path, clock, seeded_nodes):
    node = seeded_nodes()
    resource = FaultyNode(make_resource(node))

    def v1_only(request):
        if request.path == b"/":
            request.setHeader(b"Content-Type", b"application/json")
            return b'{"name": "a node", "protocols": ["v1"]}'
        return None

    resource.override = v1_only
    farm = start(tmp_path, node, clock, resource, protocol="v0")
    farm.pump(2, step=1)
    assert farm.farmer.state == "failed" and "speaks v1, not v0" in farm.farmer.error


def test_stop_finishes_the_answers_under_way_within_the_bound_and_saves(tmp_path, clock, faulty):
    node, resource = faulty
    farm = start(tmp_path, node, clock, resource, stop_timeout=5.0)
    farm.pump(2, step=1)
    farmer = farm.farmer
    # the node holds the next /answer: the farmer is stopped while it is under way
    for c in farmer.book.contracts.values():
        c.answered = False
        farmer.sessions[0].jobs.append(("prove", c))
    resource.mode, resource.only = "hold", "/answer/"
    farmer.sessions[0].kick()
    farm.pump(1, step=0.1)
    assert resource.held
    farm.farm.stop()
    farm.settle()
    assert not farm.farm.done.called  # waiting for the answer under way
    resource.release()
    farm.settle()
    clock.advance(0.1)
    farm.settle()
    assert farm.farm.done.called and run(farm.farm.done) == 0
    assert all(c.answered for c in farmer.book.contracts.values())
    with open(os.path.join(farmer.book.directory, "state.json"), "rb") as fh:
        saved = orjson.loads(fh.read())
    assert all(r["answered"] for r in saved["contracts"]) and len(saved["contracts"]) == 4


def test_stop_gives_up_on_a_node_that_never_answers_after_the_bound(tmp_path, clock, faulty):
    node, resource = faulty
    farm = start(tmp_path, node, clock, resource, stop_timeout=3.0)
    farm.pump(2, step=1)
    resource.mode, resource.only = "hold", "/challenge/"
    farmer = farm.farmer
    for c in farmer.book.contracts.values():
        farmer.sessions[0].wait(c, clock.seconds())
    farmer.sessions[0].kick()
    farm.pump(1, step=0.1)
    assert resource.held
    assert farm.stop() == 0  # within the 3 s bound, the request under way cancelled
    assert os.path.exists(os.path.join(farmer.book.directory, "state.json"))


def test_a_farmer_back_after_a_missed_due_time_answers_the_challenge_asked_again(tmp_path, clock, seeded_nodes):
    """Containment: the node asks a missed challenge again one interval later; a farmer that was away
    over the due time answers it then instead of giving the contract up."""
    node = seeded_nodes(containment_retries=3, seeded_challenges=8)
    resource = FaultyNode(make_resource(node))
    farm = start(tmp_path, node, clock, resource, stop_timeout=1.0)
    farm.pump(INTERVAL + 5, step=1)  # the second challenges are out and answered
    resource.mode, resource.only = "hold", "/answer/"  # the third ones' answers never get there
    farm.pump(INTERVAL, step=1)
    assert resource.held
    assert farm.stop() == 0
    resource.mode, resource.held = None, []
    for _ in range(INTERVAL):  # away over the due time: only the node's timer runs
        clock.advance(1)
        run(node.expiry.expire())
    again = farm.restarted()
    again.start()
    again.pump(INTERVAL / 2, step=0.5)
    farmer = again.farmer
    assert len(farmer.book) == 4 and farmer.state == "farming"
    assert farmer.results["v1"][0] == 4  # each challenge asked again, answered
    audits = node_status(node, farmer.token)["audits"]
    assert audits["retries"] == 4 and audits["misses"] == 0 and audits["fails"] == 0
    again.stop()


def test_a_token_given_with_t_that_the_node_does_not_know_is_said_and_not_replaced(tmp_path, clock, faulty):
    node, resource = faulty
    farm = start(tmp_path, node, clock, resource, per_node={"token": "cd" * 16})
    farm.pump(2, step=1)
    assert farm.farmer.state == "failed" and "does not know the token of farmer" in farm.farmer.error
    assert "--forcenew" in farm.farmer.error and not resource.paths("/new/")


def test_a_state_file_that_is_not_the_farmers_stops_that_node_with_its_name(tmp_path, clock, faulty):
    node, resource = faulty
    farm = start(tmp_path, node, clock, resource)
    farm.pump(3, step=1)
    assert farm.stop() == 0
    state = os.path.join(farm.farmer.book.directory, "state.json")
    with open(state, "w") as fh:
        fh.write("{half a state")
    again = farm.restarted()
    again.start()
    again.pump(2, step=1)
    assert again.farmer.state == "failed" and f"Couldn't parse '{state}'" in again.farmer.error
    assert len(os.listdir(again.farmer.book.directory)) == 9  # nothing removed: the files wait for a look
