"""http/routing through StubTreq over the server's resource: the converters' 400 bodies, the v1
token's 400 or 404 per route, unsigned ids, the recorded route patterns, and HEAD only where a
route declares it (405 whose Allow lists exactly the route's methods)."""

from __future__ import annotations

import pytest

from downstream_tx.http.routing import app, route_of
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
    from support import add_test_file

    file_hash = add_test_file(node, tmp_path, size=100)
    r = client.request("HEAD", f"/api/download/{file_hash}")
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
