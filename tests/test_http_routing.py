"""http/routing through StubTreq over the server's resource: the converters' 400 bodies, the v1
token's 400 or 404 per route, unsigned ids, the recorded route patterns, and HEAD only where a
route declares it (405 whose Allow lists exactly the route's methods)."""

from __future__ import annotations

import hashlib

import pytest
from klein import Klein
from treq.testing import StubTreq
from werkzeug.routing import Map, ValidationError

from downstream_tx import wire as shared
from downstream_tx.core.tokens import Token, hash_token
from downstream_tx.errors import NodeError
from downstream_tx.http import facts, routing
from downstream_tx.http.errors import ApiError
from downstream_tx.http.facts import facts_of, route_of
from downstream_tx.http.routing import RoutedKlein, app, table_match
from downstream_tx.v0.hashes import MALFORMED, FileHash, Response
from downstream_tx.v1.reports import AnswerReport, ProofOutcome, ProofResult
from support import StubClient, make_resource, run

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


# --- the converters called directly --------------------------------------------------------------------

def refusal(converter, value) -> ApiError:
    with pytest.raises(ApiError) as e:
        converter.to_python(value)
    return e.value


@pytest.mark.parametrize("cls, value, status, message", [
    (routing.TokenConverter, "xyz", "invalid_token", "token must be 32 hexadecimal characters"),
    (routing.HashConverter, "a" * 63, "invalid_hash", "file hash must be 64 hexadecimal characters"),
])
def test_converter_refusals_exactly(cls, value, status, message):
    e = refusal(cls(Map()), value)
    assert (e.code, e.body, e.headers) == (400, {"status": status, "message": message}, {})


@pytest.mark.parametrize("cls, value", [
    (routing.TokenConverter, "AB" * 16), (routing.HashConverter, "CD" * 32),
])
def test_converters_give_typed_lowercase_values(cls, value):
    for sent in (value, value.lower()):
        got = cls(Map()).to_python(sent)
        if cls is routing.TokenConverter:
            assert got == Token(value.lower(), hashlib.sha256(bytes.fromhex(value)).digest())
        else:
            assert got == FileHash(value.lower())


def test_the_response_converter_parses_once_into_a_typed_value():
    converter = routing.ResponseConverter(Map())
    assert converter.to_python("EF" * 32) == Response("ef" * 32)
    for bad in ("z" * 64, "0" * 63, "0" * 65, "0" * 64 + "\n"):
        assert converter.to_python(bad) is MALFORMED
    with pytest.raises(ValidationError):  # an empty segment does not match the route (as werkzeug)
        converter.to_python("")


def test_check_address():
    for ok in ("1" * 26, "1" * 35, "z" * 30, "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijk"[:34]):
        assert routing.check_address(ok) == ok
    for bad in ("1" * 25, "1" * 36, "0" * 30, "O" * 30, "I" * 30, "l" * 30, "1" * 29 + "!", "", "1" * 30 + "\n"):
        e = refusal(type("C", (), {"to_python": staticmethod(routing.check_address)}), bad)
        assert (e.code, e.body) == (400, {"status": "invalid_address",
                                          "message": "address must be 26 to 35 Base58 characters"}), bad


@pytest.mark.parametrize("status, kind", [(400, "invalid"), (404, "not_found"), (None, "invalid")])
def test_v1_token_converter(status, kind):
    conv = routing.V1TokenConverter(Map()) if status is None else routing.V1TokenConverter(Map(), status)
    assert conv.kind == kind
    assert isinstance(conv.map, Map)  # a werkzeug converter all the same (``map`` set)
    token = Token(TOKEN, hashlib.sha256(bytes.fromhex(TOKEN)).digest())
    assert conv.to_python(TOKEN) == token and conv.to_python(TOKEN.upper()) == token
    with pytest.raises(NodeError) as e:
        conv.to_python("xyz")
    assert (e.value.kind, e.value.status, e.value.message) == (kind, "error", shared.NONEXISTENT_TOKEN)


def test_unsigned_converter():
    conv = routing.UnsignedConverter(Map())
    assert conv.to_python("0") == 0 and conv.to_python("007") == 7
    assert conv.to_python("9" * 30) == int("9" * 30)
    for bad in ("", "9" * 31, "-1", "+1", "1.5", "1 ", "a1", "1\n"):
        with pytest.raises(ValidationError):
            conv.to_python(bad)


def test_converter_names():
    assert routing.CONVERTERS == {"token": routing.TokenConverter, "hash": routing.HashConverter,
                                  "response": routing.ResponseConverter, "v1token": routing.V1TokenConverter,
                                  "unsigned": routing.UnsignedConverter}
    assert routing._OUR_CONVERTER.sub("<", "/a/<token:t>/<v1token(404):t>/<int:n>/<x>") == "/a/<t>/<t>/<int:n>/<x>"


# --- a small app of its own: patterns, farmer, methods, bound copies, URLs and hosts -------------------

def small_app() -> routing.RoutedKlein:
    app = routing.RoutedKlein()

    @app.route("/t/<token:token>", methods=["GET"])
    def by_token(request, token):
        facts = facts_of(request)
        return f"{facts.route} {facts.farmer} {token.text}"

    @app.route("/n/<unsigned:n>", endpoint="numbered")
    def numbered(request, n):
        facts = facts_of(request)
        return f"{facts.route} {facts.farmer} {n + 1}"

    @app.route("/h/<hash:token>", methods=["get", "head"])
    def with_head(request, token):
        return "h"

    @app.route("/p", methods=["post"])
    def posted(request):
        return "p"

    @app.route("/any")
    def anything(request):
        return "any"

    return app


def call(app, method: str, path: str, host: str = "node.test"):
    treq = StubTreq(app.resource())
    resp = run(treq.request(method, f"http://{host}{path}"))
    return resp.code, run(resp.content()), resp.headers


def test_routed_klein_records_pattern_and_farmer():
    app = small_app()
    assert app.patterns == {"by_token": "/t/<token>", "numbered": "/n/<n>", "with_head": "/h/<token>",
                            "posted": "/p", "anything": "/any"}
    farmer = hashlib.sha256(bytes.fromhex(TOKEN)).hexdigest()[:20]
    code, body, _ = call(app, "GET", "/t/" + TOKEN.upper())
    assert (code, body.decode()) == (200, f"/t/<token> {farmer} {TOKEN}")
    code, body, _ = call(app, "GET", "/n/41")
    assert (code, body.decode()) == (200, "/n/<n> None 42")
    assert len(farmer) == 20


def test_head_only_where_declared_and_methods_upper_cased():
    app = small_app()
    assert call(app, "HEAD", "/h/" + HASH)[0] == 200
    code, _, headers = call(app, "HEAD", "/t/" + TOKEN)
    assert code == 405 and headers.getRawHeaders("allow") == ["GET"]
    assert call(app, "POST", "/p")[0] == 200
    code, _, headers = call(app, "GET", "/p")
    assert code == 405 and headers.getRawHeaders("allow") == ["POST"]
    # a GET route keeps GET; a route that names no methods takes any (HEAD too)
    assert call(app, "GET", "/h/" + HASH)[0] == 200
    assert call(app, "HEAD", "/any")[0] == 200 and call(app, "DELETE", "/any")[0] == 200


def test_bound_copies_share_the_patterns():
    class Server:
        app = routing.RoutedKlein()

        @app.route("/x")
        def x(self, request):
            return "x"

    bound = Server().app
    assert bound is not Server.__dict__["app"]
    assert bound.patterns is Server.__dict__["app"].patterns and bound.patterns == {"x": "/x"}
    assert isinstance(routing.RoutedKlein().resource(), routing.Router)
    assert isinstance(Klein().resource(), routing.KleinResource)
    assert Server().app.resource().server is not None and routing.RoutedKlein().resource().server is None


def test_a_url_that_is_not_utf8_is_a_json_400():
    app = small_app()
    code, body, headers = call(app, "GET", "/t/%c0%af")
    assert code == 400
    assert body == b'{"status":"invalid_url","message":"the URL is not UTF-8 after percent-decoding"}'
    assert headers.getRawHeaders("content-type") == ["application/json"]
    # a UTF-8 path that matches nothing is the app's ordinary 404
    assert call(app, "GET", "/%c3%a9")[0] == 404


def test_a_host_that_is_not_utf8_is_a_json_400():
    treq = StubTreq(small_app().resource())
    resp = run(treq.request("GET", "http://node.test/t/" + TOKEN, headers={b"Host": [b"\xc0\xaf.test"]}))
    assert resp.code == 400
    assert run(resp.content()) == b'{"status":"invalid_url","message":"the URL is not UTF-8 after percent-decoding"}'
    resp = run(treq.request("GET", "http://node.test/t/" + TOKEN, headers={b"Host": ["\xe9.test".encode()]}))
    assert resp.code == 200


# --- a request's facts and an answer's outcome ---------------------------------------------------------

def test_route_of_and_farmer_of():
    class Request:
        pass

    r = Request()
    assert facts.route_of(r) == "unmatched" and facts.farmer_of(r) is None
    facts.facts_of(r).route, facts.facts_of(r).farmer = "", "f" * 20
    assert facts.route_of(r) == "unmatched" and facts.farmer_of(r) == "f" * 20


def test_outcome_of_an_answer():
    class Request:
        pass

    r = Request()
    assert facts.outcome_of(r) is None
    facts.set_outcome(r, "pass:2")
    assert facts.outcome_of(r) == "pass:2"
    ok, bad = ProofResult(1, ProofOutcome.OK), ProofResult(2, ProofOutcome.INVALID)
    other = ProofResult(3, ProofOutcome.CORRUPTED)

    def report(*entries):
        return routing.report_outcome(AnswerReport(list(entries)))

    assert report() == "empty"
    assert report(ok) == "pass:1"
    assert report(bad, bad) == "fail:2"
    assert report(other, ProofResult(4, ProofOutcome.EXPIRED), ProofResult(5, ProofOutcome.NOT_FOUND)) == "other:3"
    assert report(other, bad, ok, ok, bad, ok) == "pass:3,fail:2,other:1"
