"""Property tests (hypothesis) of every request parser, through the HTTP layer (StubTreq over the
Klein resource, a real database on each engine): path parameters of v0, v1 and status routes,
/challenge and /answer bodies, proofs, /new signatures and download ranges.

Every response must be under 500 and JSON (downloads: the bytes asked for), and a 4xx must leave the
database exactly as it was. Library-level parsers have their own tests (test_bitcoin.py: addresses
and signatures; test_heartbeat_props.py: heartbeat objects; test_config.py; test_admin.py: CSV).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import string
from urllib.parse import quote

import ijson
import orjson
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from treq.testing import StubTreq

from downstream_tx.http.bodies import MAX_STREAM_DEPTH, ItemScanner, _items_before_error
from support import ADDRESS, add_test_file, make_config, make_node, make_resource, run, snapshot

V1 = "/api/downstream/v1"
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                       HealthCheck.too_slow])
HEX = "0123456789abcdefABCDEF"


class Http:
    def __init__(self, node, config):
        self.node = node
        self.treq = StubTreq(make_resource(node, config))

    def call(self, method: str, path: str, data: bytes | None = None, headers: dict | None = None):
        resp = run(self.treq.request(method, "http://node.test" + path, data=data, headers=headers or {},
                                     allow_redirects=False))
        body = run(resp.content())
        return resp.code, resp.headers, body


def make_world(tmp_path, db_url, clock):
    """A node with a stored file, a v0 token holding a contract on it and a v1 token holding seeded
    contracts; ``world.check(...)`` makes a request and checks the invariants."""
    config = make_config(tmp_path, db_url, seeded_pool="4096:3", seeded_challenges=4, seeded_interval=60,
                         max_tokens_per_ip=0)
    node = make_node(config, clock)
    run(node.pool.refill())
    http = Http(node, config)
    file_hash = add_test_file(node, tmp_path, redundancy=2, size=3000)
    code, _, body = http.call("GET", f"/api/downstream/new/{ADDRESS}")
    v0_token = orjson.loads(body)["token"]
    code, _, body = http.call("GET", f"/api/downstream/chunk/{v0_token}")
    url = orjson.loads(body)["url"]
    download = url[url.index("/api/download/"):]  # with the contract's capability
    code, _, body = http.call("GET", f"{V1}/new/{ADDRESS}")
    v1_token = orjson.loads(body)["token"]
    code, _, body = http.call("GET", f"{V1}/chunk/{v1_token}/8192")
    contracts = [c["file_hash"] for c in orjson.loads(body)["chunks"]]
    assert contracts

    class World:
        pass

    w = World()
    w.node, w.http, w.file_hash, w.v0_token, w.v1_token, w.contracts = (node, http, file_hash, v0_token, v1_token,
                                                                       contracts)
    w.download = download

    def check(method, path, data=None, headers=None, json=True, counted=()):
        """``counted``: the 4xx statuses that count an error against the farmer (its reputation
        row changes, and nothing else)."""
        before = snapshot(node)
        code, resp_headers, body = http.call(method, path, data, headers)
        assert code < 500, (method, path, code, body[:300])
        if json:
            assert resp_headers.getRawHeaders("content-type") == ["application/json"], (path, code, body[:200])
            parsed = orjson.loads(body)
            if code >= 400:
                assert set(parsed) == {"status", "message"} and parsed["message"], parsed
        if 400 <= code < 500:
            after = snapshot(node)
            if counted and orjson.loads(body)["status"] in counted:
                assert after["reputation"] != before["reputation"], (method, path, code, body[:300])
                before.pop("reputation"), after.pop("reputation")
            if "/new/" in path:  # every token request counts against its client's rate limit, before
                # its address is looked at (http/routing.py check_address): the node's shared buckets,
                # written by a transaction of its own (on MySQL, its id is kept: txn_outcomes)
                for table in ("rate_buckets", "txn_outcomes"):
                    before.pop(table), after.pop(table)
            assert after == before, (method, path, code, body[:300])
        return code, resp_headers, body

    w.check = check
    return w


@pytest.fixture
def world(tmp_path, clock):
    """SQLite only: pytest-twisted cannot run a hypothesis test that is also parametrized (it wraps
    the shared inner test twice), so the properties run on SQLite and ``test_nasty_inputs`` replays
    the worst inputs on each engine."""
    w = make_world(tmp_path, "sqlite:///" + str(tmp_path / "data" / "downstream.db"), clock)
    yield w
    w.node.db.close()


@pytest.fixture
def any_world(tmp_path, db_url, clock):
    w = make_world(tmp_path, db_url, clock)
    yield w
    w.node.db.close()


def segment(text: str) -> str:
    """One path segment as a client would send it (``/``, ``%``, ``?``, NUL, non-ASCII escaped)."""
    return quote(text, safe="")


junk_text = st.text(st.characters(codec="utf-8"), max_size=80)
near_hex = st.text(HEX + "gxz-_ %/.\\\x00é", min_size=0, max_size=70)
hex32 = st.text(HEX, min_size=32, max_size=32)
hex64 = st.text(HEX, min_size=64, max_size=64)
tokenish = st.one_of(junk_text, near_hex, hex32, st.text(HEX, min_size=31, max_size=33))
hashish = st.one_of(junk_text, near_hex, hex64, st.text(HEX, min_size=63, max_size=65))
addressish = st.one_of(junk_text, st.text(string.ascii_letters + string.digits, min_size=20, max_size=40),
                       st.sampled_from([ADDRESS[:-1] + "X", ADDRESS.lower(), "1" * 34, ADDRESS + "1"]))


# --- path parameters ------------------------------------------------------------------------------

@FUZZ
@given(token=tokenish, file_hash=hashish, response=hashish, address=addressish)
def test_v0_path_parameters(world, token, file_hash, response, address):
    t, h, r, a = segment(token), segment(file_hash), segment(response), segment(address)
    world.check("GET", f"/api/downstream/new/{a}")
    world.check("GET", f"/api/downstream/chunk/{t}")
    world.check("GET", f"/api/downstream/due/{t}")
    world.check("GET", f"/api/downstream/challenge/{t}/{h}/{r}")
    world.check("DELETE", f"/api/downstream/remove/{t}/{h}")
    world.check("GET", f"/api/download/{h}", json=False)


@FUZZ
@given(cap=st.one_of(junk_text, near_hex, st.text(HEX + ".", max_size=60)), method=st.sampled_from(["GET", "HEAD"]))
def test_download_capabilities(world, cap, method):
    """Anything but the contract's capability in the query is the 404 of an unknown file, and
    changes nothing."""
    real = world.download.partition("?cap=")[2]
    code, _, body = world.check(method, f"/api/download/{world.file_hash}?cap={segment(cap)}", json=False)
    assert code == (200 if cap.lower() == real else 404), (cap, code, body[:200])


@FUZZ
@given(response=hashish, file_hash=hashish)
def test_v0_answers_with_a_real_token_never_count_a_forged_pass(world, response, file_hash):
    """A real token with junk or wrong hash responses: 4xx (nothing changed, but a malformed
    response to a well-formed file hash is counted against the farmer) or a recorded fail."""
    code, _, body = world.check("GET", f"/api/downstream/challenge/{world.v0_token}/{segment(file_hash)}/"
                                       f"{segment(response)}", counted=("invalid_response",))
    if code == 200:
        assert orjson.loads(body)["status"] == "fail"


contract_idish = st.one_of(st.integers(min_value=-(10 ** 40), max_value=10 ** 40).map(str), junk_text,
                           st.sampled_from(["1.5", "1e3", "0x1", "+1", " 1", "١", "9" * 31, "9" * 30]))


@FUZZ
@given(token=tokenish, address=addressish, contract_id=contract_idish, size=contract_idish)
def test_v1_path_parameters(world, token, address, contract_id, size):
    t, a, c, s = segment(token), segment(address), segment(contract_id), segment(size)
    world.check("GET", f"{V1}/new/{a}")
    world.check("GET", f"{V1}/heartbeat/{t}")
    world.check("GET", f"{V1}/chunk/{t}/{s}")
    world.check("GET", f"{V1}/challenge/{t}/{c}")
    world.check("POST", f"{V1}/answer/{t}/{c}", b'{"proof": {}}')
    world.check("GET", f"{V1}/tags/{t}")
    # a real token with a junk contract id or size
    world.check("GET", f"{V1}/challenge/{world.v1_token}/{c}")
    world.check("POST", f"{V1}/answer/{world.v1_token}/{c}", b'{"proof": {}}')
    world.check("GET", f"{V1}/chunk/{world.v1_token}/{s}")


numberish = st.one_of(st.integers(min_value=-(10 ** 40), max_value=10 ** 40).map(str), junk_text,
                      st.sampled_from(["18446744073709551616", "9223372036854775808", "-0", "1e9"]))


@FUZZ
@given(sort=st.one_of(junk_text, st.sampled_from(["id", "ID", "size;", "uptime DESC", "online--", "1"])),
       limit=numberish, page=numberish, farmer_id=st.one_of(junk_text, st.text(HEX, min_size=19, max_size=21)),
       online=st.booleans(), descending=st.booleans())
def test_status_path_parameters(world, sort, limit, page, farmer_id, online, descending):
    base = f"{V1}/status/list" + ("/online" if online else "")
    by = f"{base}/by/" + ("d/" if descending else "") + segment(sort)
    world.check("GET", f"{base}/{segment(limit)}/{segment(page)}")
    world.check("GET", f"{by}/{segment(limit)}")
    world.check("GET", f"{by}/{segment(limit)}/{segment(page)}")
    world.check("GET", f"{V1}/status/show/{segment(farmer_id)}")


# --- /challenge and /answer bodies ------------------------------------------------------------------

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1),
                         st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=8), inner, max_size=5)), max_leaves=20)


def nested(depth: int, opener: bytes = b"[", closer: bytes = b"]") -> bytes:
    return opener * depth + closer * depth


raw_bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(orjson.dumps),
    st.integers(min_value=1, max_value=4000).map(lambda n: b'{"hashes": [' + nested(n) + b"]}"),
    st.integers(min_value=1, max_value=4000).map(lambda n: b'{"proofs": [{"file_hash": 1, "proof": '
                                                 + b'{"a":' * n + b"1" + b"}" * n + b"}]}"),
    st.sampled_from([
        b'{"hashes": [NaN, Infinity, -Infinity]}', b'{"hashes": [1e400, -1e400, 1e-400]}',
        b'{"hashes": [123456789012345678901234567890, -123456789012345678901234567890]}',
        b'{"hashes": [1], "hashes": [2]}', b'{"proofs": [], "proofs": [{"file_hash": 1, "proof": null}]}',
        b'{"hashes": ["\xff\xfe", 1]}', b'\xef\xbb\xbf{"hashes": [1]}', b'{"hashes": [1, 2', b'{"hashes": [1,, 2]}',
        b'{"proofs": [{"file_hash": 1e400, "proof": {}}]}', b'{"proofs": [{"file_hash": true, "proof": {}}]}',
        b'{"proofs": [{"file_hash": "1", "proof": "x"}]}', b'{"proofs": [{"file_hash": [1], "proof": {}}]}',
        b'{"proofs": {"file_hash": 1}}', b'{"proofs": [1, 2, 3]}', b"null", b"", b"\x1f\x8b\x08\x00junk",
    ]),
)


def proof_like(contract_id: int):
    blob = st.one_of(st.text(string.ascii_letters + string.digits + "+/=", max_size=100), json_values)
    leaf = st.one_of(json_values, st.fixed_dictionaries({"index": st.one_of(st.integers(), json_values),
                                                         "blob": blob}))
    branch = st.one_of(json_values, st.fixed_dictionaries({"rows": st.one_of(
        json_values, st.lists(st.lists(blob, min_size=2, max_size=2), max_size=40))}))
    proof = st.one_of(json_values, st.fixed_dictionaries({"leaf": leaf, "branch": branch}))
    return proof.map(lambda p: {"file_hash": contract_id, "proof": p})


def body_variants(raw: bytes):
    """The body as sent plainly, with the client's bogus gzip header, and really gzipped."""
    yield raw, {"Content-Type": "application/json"}
    yield raw, {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    yield gzip.compress(raw), {"Content-Type": "application/json", "Content-Encoding": "gzip"}


def heartbeats(node) -> int:
    return run(node.stores.tokens.heartbeats_total())


@FUZZ
@given(raw=raw_bodies)
def test_challenge_and_answer_bodies(world, raw):
    before = heartbeats(world.node)
    for data, headers in body_variants(raw):
        for path in (f"{V1}/challenge/{world.v1_token}", f"{V1}/answer/{world.v1_token}",
                     f"{V1}/answer/{world.v1_token}/{world.contracts[0]}"):
            code, _, body = world.check("POST", path, data, headers)
            assert code == 200
            report = orjson.loads(body).get("report", [])
            assert all(entry.get("status") != "ok" for entry in report)
    assert heartbeats(world.node) == before


@FUZZ
@given(data=st.data())
def test_proofs_never_pass_unless_valid(world, data):
    """Malformed, wrong-typed, huge or random proofs for a real contract: never ``ok``."""
    items = data.draw(st.lists(proof_like(data.draw(st.sampled_from(world.contracts))), min_size=1, max_size=3))
    before = heartbeats(world.node)
    # stdlib json: orjson refuses integers past 64 bits, which this test wants to send
    code, _, body = world.check("POST", f"{V1}/answer/{world.v1_token}", json.dumps({"proofs": items}).encode())
    assert code == 200
    for entry in orjson.loads(body)["report"]:
        assert entry.get("error") in ("Proof corrupted", "Invalid proof", "Challenge already answered."), entry
    assert heartbeats(world.node) == before


def reference_items(raw: bytes, key: str) -> list:
    out = []
    try:
        for item in ijson.items(raw, key + ".item"):
            out.append(item)
    except Exception:
        pass
    return out


@settings(max_examples=150, deadline=None)
@given(value=json_values, cut=st.integers(min_value=0, max_value=400), extra=st.binary(max_size=5))
def test_fallback_parser_matches_ijson_items(value, cut, extra):
    """The bounded fallback parser yields what ``ijson.items`` yields, on truncated or spoiled JSON."""
    raw = orjson.dumps({"x": 1, "hashes": value if isinstance(value, list) else [value]})
    raw = raw[:cut] + extra
    assert _items_before_error(raw, "hashes") == reference_items(raw, "hashes")


@settings(max_examples=150, deadline=None)
@given(value=json_values, cut=st.integers(min_value=0, max_value=400), extra=st.binary(max_size=5),
       splits=st.lists(st.integers(min_value=0, max_value=400), max_size=6))
def test_the_scanner_gives_the_same_items_however_the_body_is_sliced(value, cut, extra, splits):
    """The streaming parser keeps its state between slices: any slicing gives the one-piece answer."""
    raw = orjson.dumps({"x": 1, "hashes": value if isinstance(value, list) else [value]})[:cut] + extra
    scanner = ItemScanner("hashes")
    bounds = [0, *sorted(min(s, len(raw)) for s in splits), len(raw)]
    for start, end in zip(bounds, bounds[1:]):
        if scanner.feed(raw[start:end]):
            break
    scanner.close()
    assert scanner.items == reference_items(raw, "hashes")


def test_fallback_parser_bounds_nesting():
    ok = b'{"hashes": [1, ' + nested(MAX_STREAM_DEPTH - 2) + b", 2"
    assert _items_before_error(ok, "hashes") == reference_items(ok, "hashes")
    too_deep = b'{"hashes": [1, ' + nested(200_000) + b", 2]"
    assert _items_before_error(too_deep, "hashes") == [1]


# --- /new signatures --------------------------------------------------------------------------------

signatureish = st.one_of(
    json_values,
    st.text(string.ascii_letters + string.digits + "+/=", min_size=86, max_size=90),
    st.binary(min_size=60, max_size=70).map(lambda b: __import__("base64").b64encode(b).decode()),
    st.text(max_size=100), st.sampled_from(["=" * 88, "A" * 88, "H" + "A" * 87, "\x00" * 88, "é" * 88]),
)


@pytest.fixture
def signed(tmp_path, clock):
    config = make_config(tmp_path, None, require_signature=True, signature_names_node=False, max_tokens_per_ip=0,
                         token_rate=0)
    node = make_node(config, clock)
    yield node, Http(node, config)
    node.db.close()


@FUZZ
@given(message=st.one_of(json_values, st.text(max_size=1100)), signature=signatureish,
       shape=st.sampled_from(["object", "array", "raw", "form"]), method=st.sampled_from(["GET", "POST"]))
def test_new_with_require_signature_refuses_every_bad_signature(signed, message, signature, shape, method):
    node, http = signed
    if shape == "object":
        data, ctype = orjson.dumps({"message": message, "signature": signature}), "application/json"
    elif shape == "array":
        data, ctype = orjson.dumps([message, signature]), "application/json"
    elif shape == "raw":
        data, ctype = orjson.dumps({"message": message, "signature": signature})[:-1], "application/json"
    else:
        data, ctype = b"message=x&signature=y", "application/x-www-form-urlencoded"
    before = snapshot(node)
    code, headers, body = http.call(method, f"{V1}/new/{ADDRESS}", data, {"Content-Type": ctype})
    assert code == 400, (code, body)
    assert headers.getRawHeaders("content-type") == ["application/json"]
    parsed = orjson.loads(body)
    assert parsed["status"] == "error" and parsed["message"]
    assert snapshot(node) == before


# --- Range headers ----------------------------------------------------------------------------------

rangeish = st.one_of(
    st.binary(max_size=40),
    st.builds(lambda u, a, b: f"{u}={a}-{b}".encode(), st.sampled_from(["bytes", "BYTES", " bytes", "items", ""]),
              st.one_of(st.integers(min_value=0, max_value=5000).map(str), st.just(""), st.text("0123456789-+ ,",
                                                                                                 max_size=8)),
              st.one_of(st.integers(min_value=0, max_value=10 ** 30).map(str), st.just(""),
                        st.text("0123456789-+ ,", max_size=8))),
    st.sampled_from([b"bytes=0-0,5-6", b"bytes=-0", b"bytes=--1", b"bytes=\xff-1", b"bytes=\xd9\xa1-2",
                     b"bytes=1-0", b"bytes=3000-", b"bytes=2999-", b"bytes=-99999999999999999999"]),
)


@FUZZ
@given(header=rangeish, method=st.sampled_from(["GET", "HEAD"]))
def test_download_ranges(world, header, method):
    # control characters make the header itself invalid: twisted.web answers 400 before any route
    assume(not any(c < 0x20 or c == 0x7F for c in header))
    with open(world.node.chunks.path_for(world.file_hash), "rb") as f:
        data = f.read()
    code, headers, body = world.check(method, world.download, headers={"Range": header}, json=False)
    assert code in (200, 206, 416), (header, code, body)
    expected_body = lambda b: b if method == "GET" else b""  # noqa: E731
    if code == 200:
        assert body == expected_body(data)
    elif code == 206:
        [content_range] = headers.getRawHeaders("content-range")
        span, total = content_range.removeprefix("bytes ").split("/")
        first, last = map(int, span.split("-"))
        assert int(total) == len(data) and 0 <= first <= last < len(data)
        assert body == expected_body(data[first:last + 1])
    else:
        assert headers.getRawHeaders("content-range") == [f"bytes */{len(data)}"]
        if method == "GET":
            assert orjson.loads(body)["status"] == "range_not_satisfiable"


def test_fuzz_world_is_seeded(world):
    """The fixture really holds contracts (so the properties above reach the node's code)."""
    farmer = hashlib.sha256(bytes.fromhex(world.v1_token)).hexdigest()[:20]
    code, _, body = world.http.call("GET", f"{V1}/status/show/{farmer}")
    assert code == 200 and orjson.loads(body)["contracts"] == len(world.contracts)


NASTY_SEGMENTS = ["", " ", "..", "%2e%2e", "\x00", "\\", "é" * 40, "9" * 30, "9" * 31, "18446744073709551616",
                  "-1", "1.5", "0", "0" * 32, "f" * 64, "F" * 32, ADDRESS[:-1] + "X", "' OR 1=1 --", "%00"]
NASTY_BODIES = [b'{"hashes": [123456789012345678901234567890, 9223372036854775808, 18446744073709551616, -1, 0]}',
                b'{"hashes": [1e400, NaN]}', b'{"hashes": [' + nested(100_000) + b"]}",
                b'{"proofs": [{"file_hash": 18446744073709551616, "proof": {}}, {"file_hash": -1, "proof": {}}]}',
                b'{"proofs": [{"file_hash": 1, "proof": ' + nested(5000, b'{"a":', b"}") + b"}]}",
                b"\xff\xfe\x00{", gzip.compress(b'{"hashes": [1, 2, 3]}'), b"\x1f\x8b" + b"\x00" * 100]


def test_nasty_inputs(any_world):
    """The worst inputs of the properties above, on each engine (huge integers reach SQL here)."""
    w = any_world
    for raw in NASTY_SEGMENTS:
        x = segment(raw)
        for path in (f"/api/downstream/new/{x}", f"/api/downstream/chunk/{x}", f"/api/downstream/due/{x}",
                     f"/api/downstream/challenge/{w.v0_token}/{x}/{x}", f"/api/downstream/remove/{x}/{x}",
                     f"{V1}/new/{x}", f"{V1}/heartbeat/{x}", f"{V1}/chunk/{w.v1_token}/{x}",
                     f"{V1}/challenge/{w.v1_token}/{x}", f"{V1}/tags/{x}", f"{V1}/status/list/{x}/{x}",
                     f"{V1}/status/list/by/{x}/{x}/{x}", f"{V1}/status/show/{x}"):
            w.check("GET", path)
        w.check("GET", f"/api/download/{x}", json=False)
        w.check("POST", f"{V1}/answer/{w.v1_token}/{x}", b'{"proof": {}}')
    for raw in NASTY_BODIES:
        for data, headers in body_variants(raw):
            w.check("POST", f"{V1}/challenge/{w.v1_token}", data, headers)
            w.check("POST", f"{V1}/answer/{w.v1_token}", data, headers)
    for raw_segment in ("%c0%af", "%ff", "%ed%a0%80", "a%80"):  # not UTF-8 after percent-decoding
        for path in (f"/api/download/{raw_segment}", f"/api/downstream/chunk/{raw_segment}",
                     f"{V1}/heartbeat/{raw_segment}", f"/{raw_segment}"):
            code, _, body = w.check("GET", path)
            assert (code, orjson.loads(body)["status"]) == (400, "invalid_url")
    for limit in ("9" * 30, "18446744073709551616", "9223372036854775807"):
        assert w.check("GET", f"{V1}/status/list/{limit}/{limit}")[0] == 200
        assert w.check("GET", f"{V1}/status/list/online/by/d/size/{limit}/{limit}")[0] == 200
