"""Protocol v1 routes through StubTreq over the Klein resource, on each engine, with a task.Clock:
every route and every report/error entry of spec protocol-v1 Part B §2."""

from __future__ import annotations

import gzip

import orjson
import pytest

from support import ADDRESS, make_address, run
from support.v1 import (
    INTERVAL,
    NONEXISTENT,
    SIG_MESSAGE,
    SIGNATURE,
    TESTNET,
    V1,
    answer,
    build,
    chunks,
    heartbeats,
    prove,
)


@pytest.fixture
def v1(tmp_path, db_url, clock):
    node, api = build(tmp_path, db_url, clock)
    run(node.pool.refill())
    yield api
    node.db.close()


@pytest.fixture
def make_api(tmp_path, db_url, clock):
    made = []

    def factory(fill=True, **overrides):
        node, api = build(tmp_path, db_url, clock, **overrides)
        if fill:
            run(node.pool.refill())
        made.append(node)
        return api

    yield factory
    for node in made:
        node.db.close()


# --- index, root -----------------------------------------------------------------------------------

def test_indexes(v1):
    assert v1.get(f"{V1}/") == (200, {"msg": "ok"})
    code, body = v1.get("/")
    assert code == 200 and body["name"] == "downstream-tx"


# --- /new ------------------------------------------------------------------------------------------

def test_new_get(v1):
    code, body = v1.get(f"{V1}/new/{ADDRESS}")
    assert code == 200
    assert set(body) == {"token", "type", "heartbeat"}
    assert body["type"] == "Merkle"
    assert body["heartbeat"] == {"key": "", "check_fraction": 0.01}
    assert len(body["token"]) == 32 and bytes.fromhex(body["token"])
    # POST with any body works too when signatures are not required
    assert v1.post(f"{V1}/new/{ADDRESS}", {"junk": 1})[0] == 200


@pytest.mark.parametrize("address", ["notanaddress", TESTNET, ADDRESS[:-1] + "X"])
def test_new_bad_address_is_400(v1, address):
    assert v1.get(f"{V1}/new/{address}") == (
        400, {"status": "error", "message": "Invalid address given: address is not a valid SJCX address."})


def test_new_signature_checks_in_order(make_api):
    api = make_api(require_signature=True, signature_names_node=False)
    url = f"{V1}/new/{ADDRESS}"

    def err(message):
        return 400, {"status": "error", "message": message}

    assert api.get(url) == err("New token requests must include posted signature proving ownership of farming "
                               "address")
    posted = 'Posted data must be JSON encoded object including "signature" and "message"'
    assert api.post(url, raw=b"not json") == err(posted)
    assert api.post(url, {"message": SIG_MESSAGE}) == err(posted)
    assert api.post(url, raw=orjson.dumps({"message": SIG_MESSAGE, "signature": SIGNATURE}),
                    headers={"Content-Type": "text/plain"}) == err(posted)
    assert api.post(url, {"message": "x" * 1025, "signature": "short"}) == err(
        "Please restrict your message to less than 1024 bytes.")
    assert api.post(url, {"message": SIG_MESSAGE, "signature": "short"}) == err(
        "Your signature is the wrong length.  It should be 88bytes.")
    assert api.post(url, {"message": "test messagf", "signature": SIGNATURE}) == err("Signature invalid.")
    assert api.post(f"{V1}/new/{TESTNET}", {"message": SIG_MESSAGE, "signature": SIGNATURE}) == err(
        "Invalid address given: address is not a valid SJCX address.")
    code, body = api.post(url, {"message": SIG_MESSAGE, "signature": SIGNATURE})
    assert code == 200 and body["type"] == "Merkle"


def test_new_ip_limit_uses_trusted_proxy_header(make_api):
    api = make_api(max_tokens_per_ip=2)
    for _ in range(2):
        api.new_token(forwarded="10.0.0.1")
    assert api.get(f"{V1}/new/{ADDRESS}", forwarded="10.0.0.1") == (
        400, {"status": "error", "message": "IP Disallowed, only 2 tokens are permitted per IP address"})
    api.new_token(forwarded="10.0.0.2")  # another client behind the same proxy


def test_new_ip_limit_off(make_api):
    api = make_api(max_tokens_per_ip=0)
    for _ in range(7):
        api.new_token()


def test_new_whitelist(make_api):
    api = make_api(whitelist=True, min_balance=100)
    rich, poor = make_address(1), make_address(2)
    run(api.node.farmers.import_whitelist([(rich, 100), (poor, 99)]))
    msg = (400, {"status": "error", "message": "Invalid address given: address must be in whitelist."})
    assert api.get(f"{V1}/new/{ADDRESS}") == msg
    assert api.get(f"{V1}/new/{poor}") == msg
    api.new_token(rich)


# --- /heartbeat --------------------------------------------------------------------------------------

def test_heartbeat(v1):
    token = v1.new_token()
    assert v1.get(f"{V1}/heartbeat/{token}") == (
        200, {"token": token, "type": "Merkle", "heartbeat": {"key": "", "check_fraction": 0.01}})
    assert v1.get(f"{V1}/heartbeat/{'0' * 32}") == (404, NONEXISTENT)
    assert v1.get(f"{V1}/heartbeat/xyz") == (404, NONEXISTENT)


# --- /chunk ------------------------------------------------------------------------------------------

def test_chunk_largest_that_fit_never_more_than_requested(v1, clock):
    token = v1.new_token()
    got = chunks(v1, token, 30000)
    assert [c["size"] for c in got] == [16384, 4096, 4096, 4096]
    for c in got:
        assert set(c) == {"seed", "size", "file_hash", "challenge", "tag", "due"}
        assert type(c["file_hash"]) is int and type(c["due"]) is float and c["due"] == float(INTERVAL)
        assert len(c["seed"]) == 32 and c["challenge"]["index"] == 0
        assert len(c["tag"]["tree"]["nodes"]) == 2 * 2 ** c["tag"]["tree"]["order"]
        assert c["tag"]["tree"]["leaves"] == [] and c["tag"]["filesz"] == c["size"]
    assert chunks(v1, token, 100) == []  # nothing that small
    assert [c["size"] for c in chunks(v1, token, 1 << 30)] == [16384, 16384, 16384, 4096]
    assert chunks(v1, token) == []  # pool empty until the timer refills


def test_chunk_default_size_and_count_limit(make_api):
    api = make_api(max_chunks_per_request=3)
    token = api.new_token()
    code, body = api.get(f"{V1}/chunk/{token}")
    assert code == 200 and len(body["chunks"]) == 3


@pytest.mark.parametrize("size", ["-5", "1.5", "abc", "0x10", "%20"])
def test_chunk_size_unsigned_decimal_only(v1, size):
    token = v1.new_token()
    assert v1.get(f"{V1}/chunk/{token}/{size}")[0] == 404


def test_chunk_unknown_token_is_400(v1):
    assert v1.get(f"{V1}/chunk/{'a' * 32}/1000") == (400, NONEXISTENT)
    assert v1.get(f"{V1}/chunk/nothex/1000") == (400, NONEXISTENT)


def test_chunk_per_address_cap_counts_active_contracts_only(make_api, clock):
    api = make_api(max_size_per_address=20000)
    token = api.new_token()
    other = api.new_token()  # same address: the cap is per address
    assert [c["size"] for c in chunks(api, token, 1 << 20)] == [16384]
    assert chunks(api, other, 1 << 20) == []  # 3616 bytes left: nothing fits
    clock.advance(INTERVAL)  # the unanswered challenge expires
    run(api.node.expiry.expire())
    assert [c["size"] for c in chunks(api, other, 1 << 20)] == [16384]


def test_chunk_moves_token_to_new_ip_within_limit(make_api):
    api = make_api(max_tokens_per_ip=1)
    token = api.new_token(forwarded="10.0.0.1")
    api.new_token(forwarded="10.0.0.2")
    assert api.get(f"{V1}/chunk/{token}/4096", forwarded="10.0.0.2") == (
        400, {"status": "error", "message": "IP Disallowed, only 1 tokens are permitted per IP address"})
    assert api.get(f"{V1}/chunk/{token}/4096", forwarded="10.0.0.3")[0] == 200
    # the token now counts against 10.0.0.3, and 10.0.0.1 is free again
    assert api.get(f"{V1}/new/{ADDRESS}", forwarded="10.0.0.3")[0] == 400
    api.new_token(forwarded="10.0.0.1")


# --- /challenge and /answer ----------------------------------------------------------------------------

def test_full_heartbeat_cycle(v1, clock):
    token = v1.new_token()
    [c] = chunks(v1, token, 16384)
    fh = c["file_hash"]
    refresh = lambda: v1.post(f"{V1}/challenge/{token}", {"hashes": [fh]})  # noqa: E731

    # pending, unanswered: the same challenge
    assert refresh() == (200, {"challenges": [{"file_hash": fh, "challenge": c["challenge"], "due": 60.0,
                                               "answered": False}]})
    clock.advance(10)
    assert answer(v1, token, [(fh, prove(c))]) == (200, {"report": [{"file_hash": fh, "status": "ok"}]})
    # a pass cannot count twice
    assert answer(v1, token, [(fh, prove(c))]) == (
        200, {"report": [{"file_hash": fh, "error": "Challenge already answered."}]})
    # answered but not yet due: same challenge, answered true
    assert refresh() == (200, {"challenges": [{"file_hash": fh, "challenge": c["challenge"], "due": 50.0,
                                               "answered": True}]})
    clock.advance(70)  # 20 s after due: the next challenge's due is old due + interval
    code, body = refresh()
    [entry] = body["challenges"]
    assert entry["answered"] is False and entry["challenge"]["index"] == 1 and entry["due"] == 40.0
    assert refresh()[1]["challenges"][0]["challenge"] == entry["challenge"]  # not issued twice
    assert answer(v1, token, [(fh, prove(c, entry["challenge"]))])[1] == {"report": [{"file_hash": fh,
                                                                                       "status": "ok"}]}
    assert heartbeats(v1, token) == 2


def test_challenge_entries(v1, clock):
    token, other = v1.new_token(), v1.new_token()
    a, b = chunks(v1, token, 8192)  # two 4096 chunks
    [o] = chunks(v1, other, 4096)
    answer(v1, token, [(a["file_hash"], prove(a))])
    clock.advance(INTERVAL)
    code, body = v1.post(f"{V1}/challenge/{token}", {"hashes": [a["file_hash"], b["file_hash"], o["file_hash"],
                                                                 999, "7x"]})
    assert code == 200
    entries = {e["file_hash"]: e for e in body["challenges"]}
    assert entries[o["file_hash"]] == {"file_hash": o["file_hash"], "error": "contract not found"}
    assert entries[999] == {"file_hash": 999, "error": "contract not found"}
    assert entries[b["file_hash"]] == {"file_hash": b["file_hash"], "error": "contract expired"}
    assert entries[a["file_hash"]]["challenge"]["index"] == 1
    assert "7x" not in entries and len(entries) == 4  # the first non-number ends the list


def test_no_more_challenges(make_api, clock):
    api = make_api(seeded_challenges=1, seeded_pool="4096:1")
    token = api.new_token()
    [c] = chunks(api, token, 4096)
    answer(api, token, [(c["file_hash"], prove(c))])
    clock.advance(INTERVAL)
    assert api.post(f"{V1}/challenge/{token}", {"hashes": [c["file_hash"]]}) == (
        200, {"challenges": [{"file_hash": c["file_hash"], "status": "no more challenges"}]})


def test_challenge_body_parsing(v1, clock):
    token = v1.new_token()
    a, b = chunks(v1, token, 8192)
    ids = [a["file_hash"], b["file_hash"]]
    url = f"{V1}/challenge/{token}"
    assert v1.post(url, raw=b"{not json") == (200, {"challenges": []})
    assert v1.post(url, raw=b"") == (200, {"challenges": []})
    assert v1.post(url, {"hashes": "x"}) == (200, {"challenges": []})
    # a truncated body: the items before the error, as the streaming parser saw them
    code, body = v1.post(url, raw=b'{"hashes": [%d, {"x' % ids[0])
    assert [e["file_hash"] for e in body["challenges"]] == [ids[0]]
    code, body = v1.post(url, raw=b'{"hashes": [%d, %d, tru' % (ids[0], ids[1]))
    assert [e["file_hash"] for e in body["challenges"]] == ids
    # duplicates collapse; numeric strings count as their number and are answered with the id
    code, body = v1.post(url, {"hashes": [ids[0], ids[0], str(ids[1])]})
    assert [e["file_hash"] for e in body["challenges"]] == ids
    # GET: every active contract; /<id>: one
    assert sorted(e["file_hash"] for e in v1.get(url)[1]["challenges"]) == ids
    assert [e["file_hash"] for e in v1.get(f"{url}/{ids[1]}")[1]["challenges"]] == [ids[1]]
    assert v1.post(f"{V1}/challenge/{'b' * 32}", {"hashes": ids}) == (400, NONEXISTENT)


def test_answer_entries(v1, clock):
    token, other = v1.new_token(), v1.new_token()
    a, b, c = chunks(v1, token, 12288)
    [d] = chunks(v1, token, 16384)
    [o] = chunks(v1, other, 4096)
    wrong = prove(a)
    wrong["leaf"]["blob"] = prove(b)["leaf"]["blob"]
    code, body = answer(v1, token, [(a["file_hash"], prove(a)), (b["file_hash"], wrong),
                                    (c["file_hash"], {"leaf": "corrupt"}), (o["file_hash"], prove(o)),
                                    (12345, prove(a))])
    assert code == 200
    assert body["report"] == [
        {"file_hash": a["file_hash"], "status": "ok"},
        {"file_hash": b["file_hash"], "error": "Invalid proof"},
        {"file_hash": c["file_hash"], "error": "Proof corrupted"},
        {"file_hash": o["file_hash"], "error": "contract not found"},
        {"file_hash": 12345, "error": "contract not found"},
    ]
    # a proof of another contract's challenge is invalid too
    assert answer(v1, token, [(d["file_hash"], prove(c))])[1]["report"] == [
        {"file_hash": d["file_hash"], "error": "Invalid proof"}]
    clock.advance(INTERVAL)
    assert answer(v1, token, [(b["file_hash"], prove(b))])[1]["report"] == [
        {"file_hash": b["file_hash"], "error": "Answer failed: contract expired."}]
    assert heartbeats(v1, token) == 1


def test_answer_duplicate_in_one_batch_counts_once(v1):
    token = v1.new_token()
    [c] = chunks(v1, token, 4096)
    code, body = answer(v1, token, [(c["file_hash"], prove(c)), (c["file_hash"], prove(c))])
    assert body == {"report": [{"file_hash": c["file_hash"], "status": "ok"}]}
    assert heartbeats(v1, token) == 1


def test_answer_body_variants(v1):
    token = v1.new_token()
    a, b, c = chunks(v1, token, 12288)
    url = f"{V1}/answer/{token}"
    assert v1.post(url, raw=b"garbage", headers={"Content-Encoding": "gzip"}) == (200, {"report": []})
    assert v1.post(url, {"proofs": [a["file_hash"]]}) == (200, {"report": []})  # not an object: list ends
    # a really gzipped body is accepted too
    body = orjson.dumps({"proofs": [{"file_hash": a["file_hash"], "proof": prove(a)}]})
    assert v1.post(url, raw=gzip.compress(body), headers={"Content-Encoding": "gzip"})[1] == {
        "report": [{"file_hash": a["file_hash"], "status": "ok"}]}
    # the single-contract form
    assert v1.post(f"{url}/{b['file_hash']}", {"proof": prove(b)}) == (
        200, {"report": [{"file_hash": b["file_hash"], "status": "ok"}]})
    assert v1.post(f"{url}/{c['file_hash']}", {}) == (
        200, {"report": [{"file_hash": c["file_hash"], "error": "Proof corrupted"}]})
    assert v1.post(f"{V1}/answer/{'c' * 32}", {"proofs": []}) == (400, NONEXISTENT)
    assert v1.get(url)[0] == 405


def test_answer_ip_change_over_limit(make_api):
    api = make_api(max_tokens_per_ip=1)
    token = api.new_token(forwarded="10.0.0.1")
    api.new_token(forwarded="10.0.0.2")
    [c] = chunks(api, token, 4096)
    assert answer(api, token, [(c["file_hash"], prove(c))], headers={"X-Forwarded-For": "10.0.0.2"}) == (
        400, {"status": "error", "message": "IP Disallowed, only 1 tokens are permitted per IP address"})
    code, body = answer(api, token, [(c["file_hash"], prove(c))], headers={"X-Forwarded-For": "10.0.0.9"})
    assert body["report"][0]["status"] == "ok"


# --- tags ----------------------------------------------------------------------------------------------

def test_tags_until_the_contract_ends(v1, clock):
    token = v1.new_token()
    got = chunks(v1, token, 8192)
    code, body = v1.get(f"{V1}/tags/{token}")
    assert code == 200
    assert body == {"tags": [{"file_hash": c["file_hash"], "tag": c["tag"]} for c in got]}
    clock.advance(INTERVAL)
    run(v1.node.expiry.expire())
    assert v1.get(f"{V1}/tags/{token}") == (200, {"tags": []})
    assert v1.get(f"{V1}/tags/{'d' * 32}") == (404, NONEXISTENT)


def test_an_expired_unanswered_contract_is_logged_with_farmer_and_file(make_api, clock):
    from twisted.logger import formatEvent, globalLogPublisher

    from downstream_tx.runtime import contract_timer

    api = make_api()
    token = api.new_token()
    [chunk] = chunks(api, token, 20000)
    timer = contract_timer(api.node)
    run(timer())
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        clock.advance(INTERVAL + api.node.config.late_grace)  # the timer waits late_grace past the expiration
        summary = run(timer())
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert summary.v1_failed == 1
    farmer_id = __import__("hashlib").sha256(bytes.fromhex(token)).hexdigest()[:20]
    lines = [formatEvent(e) for e in events if "failed (" in formatEvent(e)]
    assert len(lines) == 1 and f"contract {chunk['file_hash']} failed" in lines[0]
    assert f"farmer {farmer_id}, file " in lines[0] and lines[0].endswith("(v1)") and token not in lines[0]
