"""Every route, status and error case of api-v0.md through StubTreq, on SQLite and MariaDB."""

from __future__ import annotations

import re

import pytest

from downstream_tx.db.database import DatabaseUnavailable
from support import (
    ADDRESS,
    add_test_file,
    assert_error,
    contract_row,
    file_replicas,
    make_address,
    new_token,
    run,
    stored_bytes,
    token_row,
    v0_answer,
)

HEX32 = re.compile(r"^[0-9a-f]{32}$")
HEX64 = re.compile(r"^[0-9a-f]{64}$")
NO_SUCH_HASH = "ab" * 32
NO_SUCH_TOKEN = "cd" * 16


@pytest.fixture
def make_api(make_v0_api):
    return make_v0_api


@pytest.fixture
def api(make_api):
    return make_api(public_url="https://node.example:8443/")


# --- /new ------------------------------------------------------------------------------------------

def test_new_gives_a_token(api):
    node, client = api
    r = client.get(f"/api/downstream/new/{ADDRESS}")
    assert r.code == 200
    body = r.json()
    assert set(body) == {"token"} and HEX32.match(body["token"])
    assert token_row(node, body["token"]).address == ADDRESS


@pytest.mark.parametrize("address", ["abc", "0OIl" * 8, "1" * 40, "19qVgG8C6eXwKMMyvVegsi3xCsKyk3Z3j%2B"])
def test_new_rejects_a_malformed_address(api, address):
    assert_error(api[1].get(f"/api/downstream/new/{address}"), 400, "invalid_address")


def test_new_rejects_a_bad_checksum(api):
    bad = ADDRESS[:-1] + ("W" if ADDRESS[-1] != "W" else "X")
    assert_error(api[1].get(f"/api/downstream/new/{bad}"), 400, "invalid_address")


def test_new_whitelist(make_api):
    node, client = make_api(whitelist=True, min_balance=100)
    assert_error(client.get(f"/api/downstream/new/{ADDRESS}"), 403, "not_whitelisted")
    run(node.farmers.import_whitelist([(ADDRESS, 100), (make_address(1), 99)]))
    assert HEX32.match(new_token(client))
    assert_error(client.get(f"/api/downstream/new/{make_address(1)}"), 403, "not_whitelisted")


def test_new_limit_per_address(make_api):
    _, client = make_api(max_tokens_per_address=1)
    new_token(client)
    assert_error(client.get(f"/api/downstream/new/{ADDRESS}"), 429, "limit_reached")


def test_new_limit_per_ip_uses_the_client_address(make_api):
    _, client = make_api(max_tokens_per_ip=2)
    new_token(client, make_address(1))
    new_token(client, make_address(2))
    assert_error(client.get(f"/api/downstream/new/{make_address(3)}"), 429, "limit_reached")


# --- /chunk ----------------------------------------------------------------------------------------

def test_chunk_gives_a_contract(api, tmp_path):
    node, client = api
    file_hash = add_test_file(node, tmp_path, redundancy=2, interval=60, size=5000)
    token = new_token(client)
    r = client.get(f"/api/downstream/chunk/{token}")
    assert r.code == 200, r
    body = r.json()
    assert body == {"url": body["url"], "file_hash": file_hash,
                    "challenge": body["challenge"], "interval": 60, "size": 5000, "due": 60}
    # the contract's download capability travels in the query string (tests/test_downloads.py)
    assert re.fullmatch(rf"https://node\.example:8443/api/download/{file_hash}\?cap=[1-9][0-9]*\.[0-9a-f]{{32}}",
                        body["url"]), body["url"]
    assert HEX64.match(body["challenge"])
    assert file_replicas(node, file_hash) == 1


def test_chunk_url_defaults_to_the_listen_address(make_api, tmp_path):
    node, client = make_api(listen="tcp:7001:interface=0.0.0.0")
    file_hash = add_test_file(node, tmp_path)
    body = client.get(f"/api/downstream/chunk/{new_token(client)}").json()
    assert body["url"].startswith(f"http://127.0.0.1:7001/api/download/{file_hash}?cap=")


def test_chunk_prefers_the_file_furthest_below_target_and_not_held(api, tmp_path):
    node, client = api
    first = add_test_file(node, tmp_path, redundancy=2)
    second = add_test_file(node, tmp_path, redundancy=3)
    a, b = new_token(client), new_token(client, make_address(2))
    assert client.get(f"/api/downstream/chunk/{a}").json()["file_hash"] == second  # 3 missing > 2 missing
    assert client.get(f"/api/downstream/chunk/{a}").json()["file_hash"] == first  # a holds second
    assert_error(client.get(f"/api/downstream/chunk/{a}"), 404, "no_chunks")  # a holds both
    # another token of a's payout address is the same farmer: it holds both files too
    assert_error(client.get(f"/api/downstream/chunk/{new_token(client)}"), 404, "no_chunks")
    # ties (2 missing each: first 2/2 below... first has 1 of 2, second 1 of 3): second is further below
    assert client.get(f"/api/downstream/chunk/{b}").json()["file_hash"] == second
    assert client.get(f"/api/downstream/chunk/{b}").json()["file_hash"] == first
    assert (file_replicas(node, first), file_replicas(node, second)) == (2, 2)


def test_chunk_ties_go_to_the_oldest_file(api, tmp_path):
    node, client = api
    older = add_test_file(node, tmp_path, redundancy=2)
    add_test_file(node, tmp_path, redundancy=2)
    assert client.get(f"/api/downstream/chunk/{new_token(client)}").json()["file_hash"] == older


def test_chunk_never_goes_over_redundancy(api, tmp_path):
    node, client = api
    file_hash = add_test_file(node, tmp_path, redundancy=2)
    tokens = [new_token(client, make_address(i)) for i in range(4)]
    codes = [client.get(f"/api/downstream/chunk/{t}").code for t in tokens]
    assert codes == [200, 200, 404, 404]
    assert file_replicas(node, file_hash) == 2
    assert client.get(f"/api/downstream/remove/{tokens[0]}/{file_hash}").code == 200
    assert client.get(f"/api/downstream/chunk/{tokens[2]}").json()["file_hash"] == file_hash
    assert_error(client.get(f"/api/downstream/chunk/{tokens[3]}"), 404, "no_chunks")


def test_chunk_errors(api):
    _, client = api
    assert_error(client.get(f"/api/downstream/chunk/{NO_SUCH_TOKEN}"), 404, "no_token")
    assert_error(client.get(f"/api/downstream/chunk/{new_token(client)}"), 404, "no_chunks")
    for bad in ("xyz", "ab" * 15, "ab" * 17, "g" * 32):
        assert_error(client.get(f"/api/downstream/chunk/{bad}"), 400, "invalid_token")


def test_token_is_case_insensitive(api, tmp_path):
    node, client = api
    add_test_file(node, tmp_path)
    assert client.get(f"/api/downstream/chunk/{new_token(client).upper()}").code == 200


# --- /due and /challenge -------------------------------------------------------------------------

def test_due_lists_all_and_outstanding(api, tmp_path, clock):
    node, client = api
    h1 = add_test_file(node, tmp_path, interval=60)
    h2 = add_test_file(node, tmp_path, interval=120)
    token = new_token(client)
    assert client.get(f"/api/downstream/due/{token}").json() == {"all_contracts": [], "due_contracts": []}
    c1 = client.get(f"/api/downstream/chunk/{token}").json()["challenge"]
    c2 = client.get(f"/api/downstream/chunk/{token}").json()["challenge"]
    clock.advance(10.5)
    body = client.get(f"/api/downstream/due/{token}").json()
    assert body == {"all_contracts": [{"hash": h1}, {"hash": h2}],
                    "due_contracts": [{"hash": h1, "challenge": c1, "due": 50},
                                      {"hash": h2, "challenge": c2, "due": 110}]}
    answer = v0_answer(stored_bytes(node, h1), c1)
    assert client.get(f"/api/downstream/challenge/{token}/{h1}/{answer}").json() == {"status": "pass"}
    body = client.get(f"/api/downstream/due/{token}").json()
    assert body["all_contracts"] == [{"hash": h1}, {"hash": h2}]
    assert body["due_contracts"] == [{"hash": h2, "challenge": c2, "due": 110}]


def test_due_errors(api):
    _, client = api
    assert_error(client.get(f"/api/downstream/due/{NO_SUCH_TOKEN}"), 404, "no_token")
    assert_error(client.get("/api/downstream/due/nothex"), 400, "invalid_token")


def test_challenge_pass_then_not_due(api, tmp_path):
    node, client = api
    file_hash = add_test_file(node, tmp_path)
    token = new_token(client)
    challenge = client.get(f"/api/downstream/chunk/{token}").json()["challenge"]
    answer = v0_answer(stored_bytes(node, file_hash), challenge).upper()  # case-insensitive
    r = client.get(f"/api/downstream/challenge/{token}/{file_hash.upper()}/{answer}")
    assert (r.code, r.json()) == (200, {"status": "pass"})
    assert_error(client.get(f"/api/downstream/challenge/{token}/{file_hash}/{answer}"), 409, "not_due")
    assert contract_row(node, token, file_hash)["passes"] == 1


def test_challenge_fail_is_one_attempt(api, tmp_path):
    node, client = api
    file_hash = add_test_file(node, tmp_path)
    token = new_token(client)
    challenge = client.get(f"/api/downstream/chunk/{token}").json()["challenge"]
    r = client.get(f"/api/downstream/challenge/{token}/{file_hash}/{'0' * 64}")
    assert (r.code, r.json()) == (200, {"status": "fail"})
    right = v0_answer(stored_bytes(node, file_hash), challenge)
    assert_error(client.get(f"/api/downstream/challenge/{token}/{file_hash}/{right}"), 409, "not_due")
    row = contract_row(node, token, file_hash)
    assert (row["fails"], row["passes"], row["state"]) == (1, 0, "active")


def test_challenge_errors(api, tmp_path):
    node, client = api
    file_hash = add_test_file(node, tmp_path)
    token = new_token(client)
    good = "0" * 64
    assert_error(client.get(f"/api/downstream/challenge/{NO_SUCH_TOKEN}/{file_hash}/{good}"), 404, "no_token")
    assert_error(client.get(f"/api/downstream/challenge/{token}/{file_hash}/{good}"), 404, "no_hash")
    assert_error(client.get(f"/api/downstream/challenge/{token}/{NO_SUCH_HASH}/{good}"), 404, "no_hash")
    assert_error(client.get(f"/api/downstream/challenge/xx/{file_hash}/{good}"), 400, "invalid_token")
    assert_error(client.get(f"/api/downstream/challenge/{token}/xx/{good}"), 400, "invalid_hash")
    assert_error(client.get(f"/api/downstream/challenge/{token}/{file_hash}/{'0' * 63}"), 400, "invalid_response")
    assert_error(client.get(f"/api/downstream/challenge/{token}/{file_hash}/{'z' * 64}"), 400, "invalid_response")
    # nothing above changed anything
    assert client.get(f"/api/downstream/chunk/{token}").code == 200


def errors_of(node, address=ADDRESS) -> int:
    reps = run(node.stores.reputation.of_addresses([address]))
    return reps[address].errors if address in reps else 0


def test_a_malformed_answer_is_refused_and_counted_against_the_farmer(api, tmp_path):
    """A farmer's token and file hash are good, its response is not 64 hex characters: 400
    ``invalid_response`` as always, and one error on the farmer's unknown-error score. A malformed
    or unknown token, or a malformed file hash, names no farmer: refused, nothing counted."""
    node, client = api
    file_hash = add_test_file(node, tmp_path)
    token = new_token(client)
    assert client.get(f"/api/downstream/chunk/{token}").code == 200
    before = contract_row(node, token, file_hash)
    for bad in ("0" * 63, "z" * 64, "0" * 65, "0" * 64 + "%0A", "%20" + "0" * 64):
        assert_error(client.get(f"/api/downstream/challenge/{token}/{file_hash}/{bad}"), 400, "invalid_response")
    assert errors_of(node) == 5
    assert_error(client.get(f"/api/downstream/challenge/{token.upper()}/{file_hash.upper()}/xyz"), 400,
                 "invalid_response")
    assert errors_of(node) == 6  # the token and hash in either case name the farmer
    assert_error(client.get(f"/api/downstream/challenge/{NO_SUCH_TOKEN}/{file_hash}/xyz"), 400, "invalid_response")
    assert_error(client.get(f"/api/downstream/challenge/{token}/xyz/xyz"), 400, "invalid_hash")
    assert_error(client.get(f"/api/downstream/challenge/xyz/{file_hash}/xyz"), 400, "invalid_token")
    assert errors_of(node) == 6
    # the contract and its challenge are untouched: the right answer still passes
    after = contract_row(node, token, file_hash)
    assert {k: after[k] for k in ("fails", "passes", "misses", "state", "answered")} == \
        {k: before[k] for k in ("fails", "passes", "misses", "state", "answered")}
    challenge = client.get(f"/api/downstream/due/{token}").json()["due_contracts"][0]["challenge"]
    answer = v0_answer(stored_bytes(node, file_hash), challenge)
    assert client.get(f"/api/downstream/challenge/{token}/{file_hash}/{answer}").json() == {"status": "pass"}


def test_repeated_malformed_answers_suspend_a_v0_farmer(make_api, tmp_path):
    """The rule that ends in suspension holds for requests as farmers send them."""
    node, client = make_api(suspension_threshold=0.99905)
    file_hash = add_test_file(node, tmp_path)
    token = new_token(client)
    assert client.get(f"/api/downstream/chunk/{token}").code == 200
    assert_error(client.get(f"/api/downstream/challenge/{token}/{file_hash}/not-an-answer"), 400,
                 "invalid_response")
    add_test_file(node, tmp_path)
    assert_error(client.get(f"/api/downstream/chunk/{token}"), 403, "suspended")


def test_challenge_after_the_deadline_and_its_grace_is_not_due(api, tmp_path, clock):
    node, client = api
    file_hash = add_test_file(node, tmp_path, interval=60)
    token = new_token(client)
    challenge = client.get(f"/api/downstream/chunk/{token}").json()["challenge"]
    clock.advance(60 + node.config.late_grace)
    assert client.get(f"/api/downstream/due/{token}").json()["due_contracts"] == []
    answer = v0_answer(stored_bytes(node, file_hash), challenge)
    assert_error(client.get(f"/api/downstream/challenge/{token}/{file_hash}/{answer}"), 409, "not_due")


def test_challenge_at_the_deadline_is_a_late_pass(api, tmp_path, clock):
    """Within late_grace after the deadline a right answer is a pass (marked late); the 2014
    client reads only "status"."""
    node, client = api
    file_hash = add_test_file(node, tmp_path, interval=60)
    token = new_token(client)
    challenge = client.get(f"/api/downstream/chunk/{token}").json()["challenge"]
    clock.advance(60)
    assert client.get(f"/api/downstream/due/{token}").json()["due_contracts"] == []
    answer = v0_answer(stored_bytes(node, file_hash), challenge)
    r = client.get(f"/api/downstream/challenge/{token}/{file_hash}/{answer}")
    assert (r.code, r.json()) == (200, {"status": "pass", "late": True})
    # one attempt per challenge: the same answer again arrives inside window 1 (issued at the
    # deadline), whose challenge it does not answer
    r = client.get(f"/api/downstream/challenge/{token}/{file_hash}/{answer}")
    assert (r.code, r.json()) == (200, {"status": "fail"})


# --- /remove ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_remove_ends_the_contract(api, tmp_path, method):
    node, client = api
    file_hash = add_test_file(node, tmp_path)
    token = new_token(client)
    client.get(f"/api/downstream/chunk/{token}")
    r = client.request(method, f"/api/downstream/remove/{token}/{file_hash}")
    assert (r.code, r.json()) == (200, {"status": "ok"})
    assert client.get(f"/api/downstream/due/{token}").json() == {"all_contracts": [], "due_contracts": []}
    assert contract_row(node, token, file_hash)["state"] == "ended"
    assert file_replicas(node, file_hash) == 0
    assert_error(client.request(method, f"/api/downstream/remove/{token}/{file_hash}"), 404, "no_hash")


def test_remove_errors(api, tmp_path):
    node, client = api
    file_hash = add_test_file(node, tmp_path)
    token = new_token(client)
    assert_error(client.get(f"/api/downstream/remove/{NO_SUCH_TOKEN}/{file_hash}"), 404, "no_token")
    assert_error(client.get(f"/api/downstream/remove/{token}/{NO_SUCH_HASH}"), 404, "no_hash")
    assert_error(client.get(f"/api/downstream/remove/{token}/{file_hash}"), 404, "no_hash")
    assert_error(client.get(f"/api/downstream/remove/nope/{file_hash}"), 400, "invalid_token")
    assert_error(client.request("DELETE", f"/api/downstream/remove/{token}/nope"), 400, "invalid_hash")
    r = client.request("POST", f"/api/downstream/remove/{token}/{file_hash}")
    assert_error(r, 405, "method_not_allowed")
    assert "DELETE" in r.header("allow")


# --- /download -------------------------------------------------------------------------------------

@pytest.fixture
def stored(api, tmp_path):
    """A stored file, and the path (with its query) of the download URL of a contract on it."""
    node, client = api
    file_hash = add_test_file(node, tmp_path, size=300_000)
    url = client.get(f"/api/downstream/chunk/{new_token(client)}").json()["url"]
    return node, client, url.removeprefix("https://node.example:8443"), stored_bytes(node, file_hash), file_hash


def test_download_whole_chunk(stored):
    _, client, path, data, _ = stored
    r = client.get(path)
    assert r.code == 200
    assert r.body == data
    assert r.header("content-type") == "application/octet-stream"
    assert r.length == len(data)
    assert r.header("accept-ranges") == "bytes"


def test_download_head(stored):
    _, client, path, data, _ = stored
    r = client.request("HEAD", path)
    assert (r.code, r.body) == (200, b"")
    assert r.header("content-type") == "application/octet-stream"
    # (the HTTP client hides a HEAD reply's Content-Length; the end-to-end test checks it on the wire)


@pytest.mark.parametrize("header, first, last", [
    ("bytes=10-19", 10, 19),
    ("bytes=0-0", 0, 0),
    ("bytes=299990-", 299990, 299999),
    ("bytes=-10", 299990, 299999),
    ("bytes=-400000", 0, 299999),
    ("bytes=299000-500000", 299000, 299999),
    (" BYTES = 5 - 6 ", 5, 6),
])
def test_download_range(stored, header, first, last):
    _, client, path, data, _ = stored
    r = client.get(path, headers={"Range": header})
    assert r.code == 206, r
    assert r.body == data[first:last + 1]
    assert r.header("content-range") == f"bytes {first}-{last}/{len(data)}"
    assert r.length == last - first + 1


@pytest.mark.parametrize("header", ["bytes=300000-", "bytes=300000-300010", "bytes=-0"])
def test_download_unsatisfiable_range(stored, header):
    _, client, path, data, _ = stored
    r = client.get(path, headers={"Range": header})
    assert_error(r, 416, "range_not_satisfiable")
    assert r.header("content-range") == f"bytes */{len(data)}"


@pytest.mark.parametrize("header", ["items=0-5", "bytes=5-2", "bytes=a-b", "bytes=0-1,5-6", "bytes=-", "bytes"])
def test_download_ignores_a_range_it_does_not_honour(stored, header):
    _, client, path, data, _ = stored
    r = client.get(path, headers={"Range": header})
    assert (r.code, r.body) == (200, data)


def test_download_errors(stored):
    node, client, path, _, file_hash = stored
    assert_error(client.get(f"/api/download/{NO_SUCH_HASH}"), 404, "no_hash")
    assert_error(client.get("/api/download/xyz"), 400, "invalid_hash")
    run(node.files.remove(file_hash))
    assert_error(client.get(path), 404, "no_hash")
    assert client.request("HEAD", path).code == 404


def test_download_of_a_vanished_chunk_is_no_hash(stored):
    node, client, path, _, file_hash = stored
    node.chunks.delete(file_hash)
    assert_error(client.get(path), 404, "no_hash")


# --- any route -------------------------------------------------------------------------------------

def test_unknown_route_and_method(api):
    _, client = api
    assert_error(client.get("/api/downstream/nothing"), 404, "not_found")
    assert_error(client.get("/api/downstream/chunk/"), 404, "not_found")
    r = client.request("POST", f"/api/downstream/due/{NO_SUCH_TOKEN}")
    assert_error(r, 405, "method_not_allowed")
    assert "GET" in r.header("allow")


def test_unexpected_error_is_a_generic_500(api, monkeypatch):
    node, client = api

    async def broken(token):
        raise RuntimeError("secret detail")

    monkeypatch.setattr(node.v0, "due", broken)
    r = client.get(f"/api/downstream/due/{NO_SUCH_TOKEN}")
    assert_error(r, 500, "error")
    assert b"secret detail" not in r.body


def test_database_down_is_503(api, monkeypatch):
    node, client = api

    async def down(token, ip=None):
        raise DatabaseUnavailable("due: database unavailable")

    monkeypatch.setattr(node.v0, "get_chunk", down)
    r = client.get(f"/api/downstream/chunk/{NO_SUCH_TOKEN}")
    assert_error(r, 503, "unavailable")
    assert r.header("retry-after") == "5"


def test_head_is_refused_where_get_changes_state(api):
    node, client = api
    r = client.request("HEAD", f"/api/downstream/new/{ADDRESS}")
    assert r.code == 405 and r.header("allow") == "GET"
    assert run(node.stores.tokens.count()) == 0
