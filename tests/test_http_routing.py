"""http/routing through StubTreq over the server's resource: the converters' 400 bodies, the v1
token's 400 or 404 per route, unsigned ids, the recorded route patterns, and HEAD only where a
route declares it (405 whose Allow lists exactly the route's methods)."""

from __future__ import annotations

import pytest

from downstream_tx.http.routing import app, route_of
from downstream_tx.v0.hashes import Response
from support import StubClient, make_resource

TOKEN = "ab" * 16
HASH = "cd" * 32
V1 = "/api/downstream/v1"
NONEXISTENT = {"status": "error", "message": "Nonexistent token."}


@pytest.fixture
def client(node):
    return StubClient(make_resource(node))


@pytest.mark.parametrize("path, status", [
    ("/api/downstream/chunk/xyz", "invalid_token"),
    ("/api/downstream/chunk/" + "a" * 31, "invalid_token"),
    ("/api/downstream/due/" + "g" * 32, "invalid_token"),
    ("/api/download/" + "a" * 63, "invalid_hash"),
    ("/api/download/" + "z" * 64, "invalid_hash"),
    (f"/api/downstream/challenge/{TOKEN}/{HASH}/nothex", "invalid_response"),
    (f"/api/downstream/challenge/{TOKEN}/nothex/{HASH}", "invalid_hash"),
    (f"/api/downstream/challenge/nothex/{HASH}/{HASH}", "invalid_token"),
])
def test_converters_refuse_with_a_400_body(client, path, status):
    r = client.get(path)
    assert r.code == 400 and r.json()["status"] == status and r.json()["message"], r


@pytest.mark.parametrize("method, path, code", [
    ("GET", f"{V1}/chunk/xyz", 400),
    ("GET", f"{V1}/chunk/xyz/4096", 400),
    ("GET", f"{V1}/challenge/xyz", 400),
    ("POST", f"{V1}/answer/xyz", 400),
    ("GET", f"{V1}/heartbeat/xyz", 404),
    ("GET", f"{V1}/tags/xyz", 404),
])
def test_a_v1_token_that_is_not_one_is_nonexistent_with_the_routes_status(client, method, path, code):
    r = client.request(method, path)
    assert (r.code, r.json()) == (code, NONEXISTENT)


@pytest.mark.parametrize("path", [f"{V1}/chunk/{TOKEN}/-1", f"{V1}/chunk/{TOKEN}/abc", f"{V1}/challenge/{TOKEN}/1.5",
                                  f"{V1}/challenge/{TOKEN}/" + "9" * 31])
def test_an_unsigned_id_that_is_not_one_does_not_match(client, path):
    assert client.get(path).code == 404


@pytest.mark.parametrize("method, path, allow", [
    ("HEAD", f"/api/downstream/chunk/{TOKEN}", "GET"),
    ("HEAD", f"/api/downstream/new/{'1' * 30}", "GET"),
    ("HEAD", f"{V1}/chunk/{TOKEN}", "GET"),
    ("HEAD", f"{V1}/challenge/{TOKEN}", "GET, POST"),
    ("GET", f"{V1}/answer/{TOKEN}", "POST"),
    ("POST", f"/api/download/{HASH}", "GET, HEAD"),
    ("POST", f"/api/downstream/remove/{TOKEN}/{HASH}", "DELETE, GET"),
])
def test_405_allow_lists_exactly_the_routes_methods(client, method, path, allow):
    r = client.request(method, path)
    assert r.code == 405 and r.header("allow") == allow, (r, r.header("allow"))
    if method != "HEAD":
        assert r.json()["status"] == "method_not_allowed"


def test_head_where_declared(client, node, tmp_path):
    from support import add_test_file, new_token

    add_test_file(node, tmp_path, size=100)
    url = client.get(f"/api/downstream/chunk/{new_token(client)}").json()["url"]
    r = client.request("HEAD", url[url.index("/api/download/"):])
    assert r.code == 200 and r.body == b""


def test_recorded_route_patterns():
    patterns = app.patterns
    assert patterns["v1_chunk"] == f"{V1}/chunk/<token>"
    assert patterns["v1_chunk_size"] == f"{V1}/chunk/<token>/<size>"
    assert patterns["v1_heartbeat"] == f"{V1}/heartbeat/<token>"
    assert patterns["v1_answer_one"] == f"{V1}/answer/<token>/<contract_id>"
    values = set(patterns.values())
    assert "/api/downstream/chunk/<token>" in values
    assert "/api/downstream/challenge/<token>/<file_hash>/<hash_response>" in values
    assert "/api/download/<file_hash>" in values
    for pattern in values:  # our converters' names never show (werkzeug's own ``int`` stays as written)
        for name in ("token", "hash", "response", "v1token", "unsigned"):
            assert f"<{name}:" not in pattern and f"<{name}(" not in pattern, pattern


def test_route_of_a_request_never_gives_the_raw_path():
    class Request:
        pass

    assert route_of(Request()) == "unmatched"
    r = Request()
    r._dtx_route = "/api/downstream/chunk/<token>"
    assert route_of(r) == "/api/downstream/chunk/<token>"


def test_a_site_opened_before_the_node_answers_503_until_served(node, clock):
    """The daemon binds its listeners (paused) before the database is opened: until the server
    serves the site, any request that got through is a JSON 503, never a route."""
    import json

    from twisted.web.test.requesthelper import DummyRequest

    from downstream_tx.http.server import open_site
    from support import make_server

    site = open_site(node.config, clock)
    request = DummyRequest([b"health"])
    body = site.resource.render(request)
    assert request.responseCode == 503 and request.responseHeaders.getRawHeaders(b"Retry-After") == [b"5"]
    assert json.loads(body) == {"status": "unavailable", "message": "the node is starting, try again soon"}
    starting, server = site.resource, make_server(node)
    assert server.serve(site) is site and site.resource is not starting
    assert site.body_cap(b"/api/downstream/v1/answer/x") == server.batch_body_size
    assert site.body_cap(b"/api/downstream/new/x") == node.config.max_body_size


# --- the fast table in front of werkzeug's matcher ------------------------------------------------

HOT_ROUTES = {"due", "challenge", "chunk", "remove", "v1_challenge", "v1_answer", "v1_challenge_one",
              "v1_answer_one", "v1_chunk", "v1_chunk_size", "v1_heartbeat", "v1_tags", "download"}
VALID = {"token": TOKEN, "file_hash": HASH, "hash_response": "ef" * 32, "size": "4096", "contract_id": "7"}


def _variants():
    """Paths for every route of the fast table and their near misses: valid, bad values, upper case,
    an extra, a missing, a doubled or leading slash, a trailing slash, percent-encoded text."""
    from downstream_tx.http.routing import app

    paths = set()
    for candidates in app.url_map.fast_table().values():
        for _, rule, variables in candidates:
            base = rule.rule
            for _, name, _ in variables:
                base = base.replace(base[base.index("<"):base.index(">") + 1], "{" + name + "}", 1)
            valid = base.format(**VALID)
            paths |= {valid, valid + "/", valid + "/x", "/" + valid, valid.replace("/", "//", 2),
                      valid.rsplit("/", 1)[0], valid.upper(), valid.replace("api", "API"), valid + "%2Fx",
                      valid.replace("/api/", "/api/%64")}
            for _, name, _ in variables:
                for bad in ("x", "", "-1", "1.5", "9" * 31, "A" * 32, "Ab" * 16, "a" * 63, "é" * 32):
                    paths.add(base.format(**{**VALID, name: bad}))
    return sorted(paths)


def _werkzeug_and_fast(path: str, method: str):
    from downstream_tx.http.routing import app

    adapter = app.url_map.bind("node.test", "", path_info=path, default_method=method, url_scheme="http")
    outcomes = []
    for match in (adapter._werkzeug().match, adapter.match):
        try:
            rule, values = match(return_rule=True)
            outcomes.append(("match", rule.endpoint, values))
        except Exception as e:  # the refusal itself is compared: type, status, body, allowed methods
            outcomes.append(("raise", type(e).__name__, getattr(e, "code", None), getattr(e, "body", None),
                             sorted(getattr(e, "valid_methods", None) or [])))
    return outcomes


def test_the_fast_table_holds_the_hot_routes_and_no_route_werkzeug_could_match_otherwise():
    from downstream_tx.http.routing import app

    endpoints = {rule.endpoint for candidates in app.url_map.fast_table().values() for _, rule, _ in candidates}
    assert HOT_ROUTES <= endpoints
    # routes with werkzeug converters or static tails are left to werkzeug
    assert not endpoints & {"new_token", "v1_new", "v1_index", "health"}


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE", "HEAD", "PUT"])
def test_the_fast_table_matches_as_werkzeug_does(method):
    """Every path (valid, and each near miss) matches the same rule with the same values, or is
    refused the same way (the same 404, 405 with the same methods, the converter's same 400 body)."""
    paths = _variants()
    assert len(paths) > 100
    for path in paths:
        werkzeug, fast = _werkzeug_and_fast(path, method)
        assert werkzeug == fast, (method, path)


def test_the_fast_table_answers_what_werkzeug_matches():
    """The valid paths really are matched by the table (werkzeug's matcher is not called)."""
    from downstream_tx.http.routing import app

    path = f"/api/downstream/challenge/{TOKEN}/{HASH}/{HASH}"
    adapter = app.url_map.bind("node.test", "", path_info=path, default_method="GET", url_scheme="http")
    rule, values = adapter.match(return_rule=True)
    assert rule.endpoint == "challenge"
    assert values == {"token": TOKEN, "file_hash": HASH, "hash_response": Response(HASH)}
    assert adapter._adapter is None  # no werkzeug adapter was bound
    assert adapter.fast_match() is not None
    post = app.url_map.bind("node.test", "", path_info=path, default_method="POST", url_scheme="http")
    assert post.fast_match() is None  # a method the route does not take: werkzeug's 405


def test_a_route_added_later_is_in_the_table_or_left_to_werkzeug():
    """The table is built again after a rule is added: a new static route that overlaps a table
    route takes it out of the table (werkzeug prefers the static one)."""
    from werkzeug.routing import Rule

    from downstream_tx.http.routing import CONVERTERS, FastMap

    m = FastMap(fast_converters=tuple(CONVERTERS.values()))
    m.converters.update(CONVERTERS)
    m.add(Rule("/a/<token:token>", endpoint="a"))
    assert [r.endpoint for c in m.fast_table().values() for _, r, _ in c] == ["a"]
    m.add(Rule("/a/" + TOKEN, endpoint="static"))
    assert m.fast_table() == {}
    adapter = m.bind("node.test", "", path_info="/a/" + TOKEN, default_method="GET")
    assert adapter.match() == ("static", {})


def test_a_host_that_is_not_idna_is_refused_when_bound_as_werkzeug_does():
    from werkzeug.exceptions import BadHost

    from downstream_tx.http.routing import app

    with pytest.raises(BadHost):
        app.url_map.bind("\udcff.test", "", path_info="/health")


@pytest.mark.parametrize("method", ["GET", "POST", "HEAD", "DELETE"])
def test_responses_through_the_fast_table_equal_werkzeugs(node, monkeypatch, method):
    """The same requests, once with the fast table and once with werkzeug's matcher alone, get the
    same status, headers and body (errors included) on two nodes in the same state."""
    from downstream_tx.http.routing import FastAdapter

    paths = [p for p in _variants() if "%" not in p] + ["/api/downstream/due/" + "a" * 32, "/health/x", "/nope"]

    def responses():
        client = StubClient(make_resource(node))
        out = []
        for path in paths:
            r = client.request(method, path, allow_redirects=False)
            headers = {k: v for k, v in r.headers.getAllRawHeaders() if k.lower() not in (b"date", b"server")}
            out.append((path, r.code, headers, r.body))
        return out

    fast = responses()
    monkeypatch.setattr(FastAdapter, "fast_match", lambda self: None)
    assert responses() == fast


def test_a_client_that_goes_away_cancels_the_handler_of_a_table_route(node):
    """As Klein does: when the connection is lost before the answer, the handler's wait (here a
    transaction the pool never finishes) is cancelled, and nothing is written or logged as an error."""
    from twisted.internet import defer
    from twisted.internet.error import ConnectionDone
    from twisted.python.failure import Failure
    from twisted.web import server
    from twisted.web.test.requesthelper import DummyRequest

    cancelled = []

    class HangingPool:
        running = True

        def runInteraction(self, *args, **kwargs):
            return defer.Deferred(lambda d: cancelled.append(d))

    node.stores.db.pool = HangingPool()
    request = DummyRequest(f"api/downstream/due/{TOKEN}".encode().split(b"/"))
    request.method = b"GET"
    request.isSecure = lambda: False
    assert make_resource(node).render(request) is server.NOT_DONE_YET
    assert route_of(request) == "/api/downstream/due/<token>" and not cancelled
    for d in request._finishedDeferreds:
        d.errback(Failure(ConnectionDone()))
    assert len(cancelled) == 1
    assert request.written == [] and request.finished == 0
