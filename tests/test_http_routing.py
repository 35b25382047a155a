"""http/routing through StubTreq over the server's resource: the converters' 400 bodies, the v1
token's 400 or 404 per route, unsigned ids, the recorded route patterns, and HEAD only where a
route declares it (405 whose Allow lists exactly the route's methods)."""

from __future__ import annotations

import pytest

from downstream_tx.core.tokens import Token, hash_token
from downstream_tx.http import routing
from downstream_tx.http.facts import facts_of, route_of
from downstream_tx.http.routing import RoutedKlein, app, table_match
from downstream_tx.v0.hashes import FileHash, Response
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
    facts_of(r).route = "/api/downstream/chunk/<token>"
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
    paths = set()
    for candidates in app.fast_table().values():
        for route in candidates:
            base = route.rule
            for _, name, _ in route.variables:
                base = base.replace(base[base.index("<"):base.index(">") + 1], "{" + name + "}", 1)
            valid = base.format(**VALID)
            paths |= {valid, valid + "/", valid + "/x", "/" + valid, valid.replace("/", "//", 2),
                      valid.rsplit("/", 1)[0], valid.upper(), valid.replace("api", "API"), valid + "%2Fx",
                      valid.replace("/api/", "/api/%64")}
            for _, name, _ in route.variables:
                for bad in ("x", "", "-1", "1.5", "9" * 31, "A" * 32, "Ab" * 16, "a" * 63, "é" * 32):
                    paths.add(base.format(**{**VALID, name: bad}))
    return sorted(paths)


def _werkzeug(path: str, method: str):
    adapter = app.url_map.bind("node.test", "", path_info=path, default_method=method, url_scheme="http")
    try:
        rule, values = adapter.match(return_rule=True)
        return "match", rule.endpoint, values
    except Exception as e:  # the refusal itself: type, status, body, allowed methods
        return ("raise", type(e).__name__, getattr(e, "code", None), getattr(e, "body", None),
                sorted(getattr(e, "valid_methods", None) or []))


def test_the_fast_table_holds_the_hot_routes_and_no_route_werkzeug_could_match_otherwise():
    endpoints = {route.endpoint for candidates in app.fast_table().values() for route in candidates}
    assert HOT_ROUTES <= endpoints
    # routes with werkzeug converters or static tails are left to werkzeug
    assert not endpoints & {"new_token", "v1_new", "v1_index", "health"}
    for candidates in app.fast_table().values():  # the table answers each route's valid path itself
        for route in candidates:
            path = route.rule
            for _, name, _ in route.variables:
                path = path.replace(path[path.index("<"):path.index(">") + 1], VALID[name], 1)
            for method in route.methods:
                assert table_match(app.fast_table(), path, method)[0] is route, (path, method)


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE", "HEAD", "PUT"])
def test_the_fast_table_matches_as_werkzeug_does(method):
    """Every path (valid, and each near miss) the table answers is matched by werkzeug to the same
    rule with the same values; what the table does not answer goes to werkzeug anyway, so every
    refusal (404, 405 with its methods, a converter's 400 body) is werkzeug's. The valid paths are
    answered by the table."""
    paths = _variants()
    assert len(paths) > 100
    answered = 0
    for path in paths:
        found = table_match(app.fast_table(), path, method)
        if found is not None:
            answered += 1
            assert _werkzeug(path, method) == ("match", found[0].endpoint, found[1]), (method, path)
    assert answered or method in ("HEAD", "PUT")


def test_the_fast_table_answers_what_werkzeug_matches():
    path = f"/api/downstream/challenge/{TOKEN}/{HASH}/{HASH}"
    route, values = table_match(app.fast_table(), path, "GET")
    assert route.endpoint == "challenge"
    assert route.pattern == "/api/downstream/challenge/<token>/<file_hash>/<hash_response>"
    token = Token(TOKEN, hash_token(TOKEN))
    assert values == {"token": token, "file_hash": FileHash(HASH), "hash_response": Response(HASH)}
    assert _werkzeug(path, "GET") == ("match", "challenge", values)
    assert table_match(app.fast_table(), path, "POST") is None  # a method the route does not take: werkzeug's 405


def test_a_route_added_later_is_in_the_table_or_left_to_werkzeug():
    """The table is built again after a rule is added: a new static route that overlaps a table
    route takes it out of the table (werkzeug prefers the static one)."""
    m = RoutedKlein()

    @m.route("/a/<token:token>")
    def a(request, token):
        return "a"

    assert [r.endpoint for c in m.fast_table().values() for r in c] == ["a"]

    @m.route("/a/" + TOKEN)
    def static(request):
        return "static"

    assert m.fast_table() == {}
    adapter = m.url_map.bind("node.test", "", path_info="/a/" + TOKEN, default_method="GET")
    assert adapter.match() == ("static", {})


def test_a_host_that_is_not_idna_is_werkzeugs_to_refuse():
    """werkzeug refuses a Host IDNA cannot encode when it binds; the router sends every non-ASCII
    Host to Klein, so the answer stays werkzeug's."""
    from werkzeug.exceptions import BadHost

    with pytest.raises(BadHost):
        app.url_map.bind("\udcff.test", "", path_info="/health")


@pytest.mark.parametrize("method", ["GET", "POST", "HEAD", "DELETE"])
def test_responses_through_the_fast_table_equal_werkzeugs(node, monkeypatch, method):
    """The same requests, once with the fast table and once with werkzeug's matcher alone, get the
    same status, headers and body (errors included) on two nodes in the same state."""
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
    monkeypatch.setattr(routing, "table_match", lambda table, path, method: None)
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
    # the whole path was matched, as Klein records it
    assert (request.prepath, request.postpath) == (f"api/downstream/due/{TOKEN}".encode().split(b"/"), [])
    for d in request._finishedDeferreds:
        d.errback(Failure(ConnectionDone()))
    assert len(cancelled) == 1
    assert request.written == [] and request.finished == 0


def test_services_get_the_typed_values_the_converters_made(node, monkeypatch):
    """The token is checked and hashed once, by the route's converter, and the v0 answer parsed
    once: the services are handed the typed values and take them as they are."""
    from downstream_tx.core.tokens import parse_token
    from downstream_tx.v0.farming import V0Farming
    from downstream_tx.v1.farming import V1Farming

    seen = []

    def spy(cls, name):
        real = getattr(cls, name)

        async def call(self, *args, **kwargs):
            seen.append(args)
            return await real(self, *args, **kwargs)

        monkeypatch.setattr(cls, name, call)

    spy(V0Farming, "answer")
    spy(V0Farming, "due")
    spy(V1Farming, "heartbeat")
    client = StubClient(make_resource(node))
    token = Token(TOKEN, hash_token(TOKEN))
    assert client.get(f"/api/downstream/challenge/{TOKEN.upper()}/{HASH.upper()}/{HASH.upper()}").code == 404
    assert seen.pop(0)[:3] == (token, FileHash(HASH), Response(HASH))
    assert client.get(f"/api/downstream/due/{TOKEN}").code == 404
    assert seen.pop(0) == (token, 1000, 0)
    assert client.get(f"{V1}/heartbeat/{TOKEN}").code == 404
    assert seen.pop(0) == (token,)
    assert parse_token(token) is token and parse_token(TOKEN.upper()) == token and parse_token("x" * 32) is None


def test_rule_segments_arguments_and_overlaps():
    from downstream_tx.http.routing import _arguments, _may_overlap, _segments

    assert _segments("/a/<token:t>/<v1token(404):u>", True) == [
        (False, "a", None, None), (True, "t", "token", None), (True, "u", "v1token", "404")]
    assert _segments("/a/<x>", True) is None  # werkzeug's default converter is not one of ours
    for converter in ("", "default:", "string:", "token:"):
        assert _segments(f"/a/<{converter}x>", False) == [(False, "a", None, None),
                                                          (True, "x", converter[:-1] or None, None)]
    for text in ("/a/<int:x>", "/a/<path:x>", "/a/b<x>", "/a/<x>b"):
        assert _segments(text, False) is None, text
    assert _arguments(None) == () and _arguments("") == () and _arguments("404") == (404,)
    assert _arguments("1,2") == (1, 2)
    fast = _segments("/a/<token:t>", True)
    assert _may_overlap(fast, _segments("/a/<x>", False), "/a/<x>")
    assert _may_overlap(fast, _segments("/a/b/", False), "/a/b/")  # /a/b would redirect to it
    assert not _may_overlap(fast, _segments("/b/<x>", False), "/b/<x>")
    assert not _may_overlap(fast, _segments("/a/<x>/c", False), "/a/<x>/c")
    assert not _may_overlap(fast, _segments("/a", False), "/a")
    # a rule that is not plain segments overlaps unless its leading static text differs
    assert _may_overlap(fast, None, "/a/<path:p>") and not _may_overlap(fast, None, "/b/<path:p>")
    assert _may_overlap(fast, None, "/a/b/c") and _may_overlap(fast, None, "/a")
    assert not _may_overlap(fast, None, "/c/d")


def test_only_plain_rules_of_their_own_endpoint_are_in_the_table():
    m = RoutedKlein()

    def handler(request, **values):
        return b""

    m.route("/plain/<token:t>", endpoint="plain", methods=["GET"])(handler)
    m.route("/any/<hash:h>", endpoint="any")(handler)
    m.route("/defaults/<token:t>", endpoint="defaults", defaults={"x": 1})(handler)
    m.route("/built/<token:t>", endpoint="built", build_only=True)(handler)
    m.route("/moved/<token:t>", endpoint="moved", redirect_to="/plain/<t>")(handler)
    m.route("/alias/<token:t>", endpoint="alias", alias=True)(handler)
    m.route("/two/<token:t>", endpoint="two")(handler)
    m.route("/two/<token:t>/<hash:h>", endpoint="two")(handler)
    m.route("/tail/<token:t>/x", endpoint="tail")(handler)
    m.route("/theirs/<int:n>", endpoint="theirs")(handler)
    table = m.fast_table()
    assert {r.endpoint for c in table.values() for r in c} == {"plain", "any"}
    [plain] = table[("plain",)]
    assert (plain.rule, plain.pattern, plain.methods, plain.segments) == ("/plain/<token:t>", "/plain/<t>",
                                                                        frozenset({"GET"}), 2)
    assert table[("any",)][0].methods is None
    assert table_match(table, "/any/" + HASH, "PATCH")[0].endpoint == "any"
    assert table_match(table, "/plain/" + TOKEN, "POST") is None
    assert table_match(table, "/plain/" + TOKEN + "/x", "GET") is None
    assert table_match(table, "/plain/" + TOKEN, "GET")[1] == {"t": Token(TOKEN, hash_token(TOKEN))}


def test_a_route_klein_serves_records_its_pattern_and_farmer():
    """Routes outside the table (here: a static tail) are Klein's; they record the same facts."""
    m = RoutedKlein()

    @m.route("/k/<token:token>/x", methods=["GET"])
    def tail(request, token):
        facts = facts_of(request)
        return f"{facts.route} {facts.farmer}".encode()

    assert m.fast_table() == {}
    r = StubClient(m.resource()).get(f"/k/{TOKEN}/x")
    assert (r.code, r.body.decode()) == (200, f"/k/<token>/x {hash_token(TOKEN).hex()[:20]}")
