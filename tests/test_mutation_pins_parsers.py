"""Pins for the request parsers (issue 16, mutation scores): http/bodies, http/routing and
http/download's ``parse_range``, called directly. Each test pins a behaviour a surviving mutant
changed without any other test noticing; quick, so the mutation runner runs this file first."""

from __future__ import annotations

import gzip
import hashlib
import io

import pytest
from klein import Klein
from treq.testing import StubTreq
from werkzeug.routing import Map, ValidationError

from downstream_tx import wire as shared
from downstream_tx.core.tokens import Token
from downstream_tx.errors import NodeError
from downstream_tx.http import bodies, facts, routing
from downstream_tx.http.download import parse_range
from downstream_tx.http.errors import ApiError
from downstream_tx.http.facts import facts_of
from downstream_tx.v0.hashes import MALFORMED, FileHash, Response
from downstream_tx.v1.reports import AnswerReport, ProofOutcome, ProofResult
from support import run

TOKEN = "ab" * 16
HASH = "cd" * 32


# --- bodies ------------------------------------------------------------------------------------------

class Body:
    """A request whose body is ``content`` (None: no body at all); records the sizes read."""

    def __init__(self, content: bytes | None, content_type: bytes | None = None):
        self.content = None if content is None else io.BytesIO(content)
        self.reads: list[int] = []
        self.content_type = content_type
        if self.content is not None:
            read = self.content.read

            def spy(n: int = -1) -> bytes:
                self.reads.append(n)
                return read(n)

            self.content.read = spy  # type: ignore[method-assign]

    def getHeader(self, name: bytes):
        return self.content_type


def test_read_body_reads_at_most_limit_plus_one_and_keeps_limit():
    req = Body(b"abcdefgh")
    assert bodies.read_body(req, 5) == b"abcde"
    assert req.reads == [6]
    assert bodies.read_body(Body(b"abc"), 5) == b"abc"
    assert bodies.read_body(Body(b""), 5) == b""
    assert bodies.read_body(Body(None), 5) == b""


def test_inflate_only_inflates_what_starts_with_the_gzip_magic():
    data = b'{"proofs": [1]}'
    packed = gzip.compress(data)
    assert bodies.inflate(packed, 100, 16) == data
    # one byte of the magic is not enough
    assert bodies.inflate(b"\x1f" + packed[2:], 100, 16) == b"\x1f" + packed[2:]
    assert bodies.inflate(b"\x1f", 100, 16) == b"\x1f"
    assert bodies.inflate(b"", 100, 16) == b""


def test_parse_object():
    assert bodies.parse_object(b'{"a": 1}') == {"a": 1}
    assert bodies.parse_object(b"[1, 2]") == [1, 2]
    assert bodies.parse_object(b"{nope") is None
    assert bodies.parse_object(b"") is None


def test_stream_items_of_valid_json_that_is_not_a_keyed_list():
    assert bodies.stream_items(b'[1, 2]', "hashes") == []
    assert bodies.stream_items(b'{"other": [1]}', "hashes") == []
    assert bodies.stream_items(b'{"hashes": [{"a": 1}, 2]}', "hashes") == [{"a": 1}, 2]


def test_fallback_parser_reads_only_the_keyed_top_level_array():
    # a top-level scalar, a top-level array, a keyed array that is not at the top
    assert bodies._items_before_error(b"5 x", "hashes") == []
    assert bodies._items_before_error(b'"hashes" x', "hashes") == []
    assert bodies._items_before_error(b"[1, 2, x", "hashes") == []
    assert bodies._items_before_error(b'[[1, 2], x', "hashes") == []
    assert bodies._items_before_error(b'{"a": {"hashes": [1, 2]}, x', "hashes") == []
    # a key's value that is not an array, then the array under the right key
    assert bodies._items_before_error(b'{"hashes": 5, x', "hashes") == []
    assert bodies._items_before_error(b'{"hashes": {"hashes": [1]}, x', "hashes") == []
    assert bodies._items_before_error(b'{"x": 1, "hashes": [1, 2], x', "hashes") == [1, 2]
    # another key's array after the keyed one is not read
    assert bodies._items_before_error(b'{"hashes": [1], "hashes2": [2], x', "hashes") == [1]


def test_fallback_parser_builds_nested_items_whole():
    raw = b'{"proofs": [{"file_hash": 1, "proof": {"a": [1, [2]], "b": {}}}, [], {}, 3, "s", null, true, x'
    assert bodies._items_before_error(raw, "proofs") == [
        {"file_hash": 1, "proof": {"a": [1, [2]], "b": {}}}, [], {}, 3, "s", None, True]
    # an unfinished item is not returned
    assert bodies._items_before_error(b'{"proofs": [1, {"a": [1, 2', "proofs") == [1]
    assert bodies._items_before_error(b'{"proofs": [[1, 2], [3', "proofs") == [[1, 2]]


def test_fallback_parser_counts_depth_down_as_containers_close():
    # many shallow containers in a row never add up to a deep one
    raw = b'{"hashes": [' + b"[], " * 100 + b"7, x"
    assert bodies._items_before_error(raw, "hashes") == [[]] * 100 + [7]
    raw = b'{"a": [[]], "b": [[[]]], "hashes": [1], x'
    assert bodies._items_before_error(raw, "hashes") == [1]


def test_fallback_parser_max_items_counts_nested_items_too():
    raw = b'{"hashes": [' + b"[1], " * 5100 + b"x"
    assert len(bodies._items_before_error(raw, "hashes")) == shared.MAX_ITEMS


@pytest.mark.parametrize("value, parsed", [
    (b"application/json ; charset=utf-8", True), (b"  application/json", True), (b"APPLICATION/JSON", True),
    (b"application/+json", True), (b"application/json+xml", False), (b"application/x-www-form-urlencoded", False),
    (b"text/plain; application/json", False), (b"application/\xe9+json", True),
])
def test_is_json_more(value, parsed):
    assert bodies.is_json(Body(b"", value)) is parsed


# --- routing: the converters -------------------------------------------------------------------------

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


# --- routing: a small app of its own -----------------------------------------------------------------

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


def test_route_of_and_farmer_of():
    class Request:
        pass

    r = Request()
    assert facts.route_of(r) == "unmatched" and facts.farmer_of(r) is None
    facts.facts_of(r).route, facts.facts_of(r).farmer = "", "f" * 20
    assert facts.route_of(r) == "unmatched" and facts.farmer_of(r) == "f" * 20


# --- download: parse_range ---------------------------------------------------------------------------

@pytest.mark.parametrize("header, size, expected", [
    (None, 100, None),
    (b"bytes=0-9", 100, (0, 9)),
    (b"bytes=10-", 100, (10, 99)),
    (b"bytes=-10", 100, (90, 99)),
    (b"bytes=-100", 100, (0, 99)),
    (b"bytes=-1000", 100, (0, 99)),
    (b"bytes=-1", 100, (99, 99)),
    (b"bytes=-1", 1, (0, 0)),
    (b"bytes=0-0", 1, (0, 0)),
    (b" Bytes = 5 - 7 ", 100, (5, 7)),
    (b"BYTES=5-7", 100, (5, 7)),
    (b"bytes=5-5", 100, (5, 5)),
    (b"bytes=5-4", 100, None),
    (b"bytes=50-1000", 100, (50, 99)),
    (b"bytes=0-99", 100, (0, 99)),
    (b"bytes=0-100", 100, (0, 99)),
    (b"bytes=99-", 100, (99, 99)),
    (b"bytes=99-99", 100, (99, 99)),
    (b"bytes=100-", 100, False),
    (b"bytes=100-200", 100, False),
    (b"bytes=101-", 100, False),
    (b"bytes=0-", 0, False),
    (b"bytes=-0", 100, False),
    (b"bytes=-5", 0, False),
    (b"bytes=-", 100, None),
    (b"bytes=", 100, None),
    (b"bytes=5", 100, None),
    (b"bytes5-7", 100, None),
    (b"items=5-7", 100, None),
    (b"bytes=5-7,8-9", 100, None),
    (b"bytes=a-7", 100, None),
    (b"bytes=5-b", 100, None),
    (b"bytes=-b", 100, None),
    (b"bytes=5-7-9", 100, None),
    (b"bytes=\xe9-7", 100, None),
    (b"=5-7", 100, None),
])
def test_parse_range(header, size, expected):
    assert parse_range(header, size) == expected


def test_a_host_that_is_not_utf8_is_a_json_400():
    treq = StubTreq(small_app().resource())
    resp = run(treq.request("GET", "http://node.test/t/" + TOKEN, headers={b"Host": [b"\xc0\xaf.test"]}))
    assert resp.code == 400
    assert run(resp.content()) == b'{"status":"invalid_url","message":"the URL is not UTF-8 after percent-decoding"}'
    resp = run(treq.request("GET", "http://node.test/t/" + TOKEN, headers={b"Host": ["\xe9.test".encode()]}))
    assert resp.code == 200


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


def test_the_download_producer_is_a_push_producer():
    from twisted.internet.interfaces import IPushProducer
    from zope.interface.verify import verifyClass

    from downstream_tx.http.download import FileRangeProducer

    assert IPushProducer.implementedBy(FileRangeProducer) and verifyClass(IPushProducer, FileRangeProducer)


class FakeDownloadRequest:
    """Records what a producer does to a request; ``pause_after`` writes, the transport is full."""

    def __init__(self, pause_after: int | None = None):
        self.writes: list[bytes] = []
        self.registered: list = []
        self.unregistered = self.finished = 0
        self.pause_after = pause_after

    def registerProducer(self, producer, streaming):
        self.registered.append((producer, streaming))

    def unregisterProducer(self):
        self.unregistered += 1

    def finish(self):
        self.finished += 1

    def write(self, data: bytes):
        self.writes.append(data)
        if self.pause_after is not None and len(self.writes) % self.pause_after == 0:
            self.registered[0][0].pauseProducing()


def test_the_producer_streams_its_range_a_block_at_a_time():
    from downstream_tx.http.download import FileRangeProducer

    assert FileRangeProducer.BLOCK == 64 * 1024
    data = bytes(range(256)) * 1000
    handle = io.BytesIO(data)
    req = FakeDownloadRequest()
    producer = FileRangeProducer(req, handle, 10, 150_000)
    assert (producer.paused, producer.stopped, producer._producing) == (False, False, False)
    producer.start()
    assert req.registered == [(producer, True)]
    assert [len(w) for w in req.writes] == [65536, 65536, 150_000 - 2 * 65536]
    assert b"".join(req.writes) == data[10:150_010]
    assert (req.unregistered, req.finished, handle.closed, producer.stopped) == (1, 1, True, True)


def test_the_producer_pauses_and_resumes():
    from downstream_tx.http.download import FileRangeProducer

    data = b"x" * (3 * 65536 + 5)
    req = FakeDownloadRequest(pause_after=1)
    handle = io.BytesIO(data)
    producer = FileRangeProducer(req, handle, 0, len(data))
    producer.start()
    assert len(req.writes) == 1 and producer.paused and req.finished == 0
    producer.resumeProducing()
    assert len(req.writes) == 2 and req.finished == 0
    producer.resumeProducing()
    producer.resumeProducing()
    # the last block written: done at once, though the transport asked for a pause
    assert [len(w) for w in req.writes] == [65536, 65536, 65536, 5]
    assert (req.unregistered, req.finished, handle.closed) == (1, 1, True)
    producer.resumeProducing()  # nothing more after the end
    assert (len(req.writes), req.finished) == (4, 1)


def test_the_producer_stops_and_ends_short_on_a_shrunk_file():
    from downstream_tx.http.download import FileRangeProducer

    req = FakeDownloadRequest(pause_after=1)
    handle = io.BytesIO(b"y" * 200_000)
    producer = FileRangeProducer(req, handle, 0, 200_000)
    producer.start()
    producer.stopProducing()
    assert handle.closed and producer.stopped
    producer.resumeProducing()
    assert len(req.writes) == 1 and req.finished == 0
    # a file shorter than the range: the response ends after what there was
    req = FakeDownloadRequest()
    handle = io.BytesIO(b"z" * 70_000)
    FileRangeProducer(req, handle, 0, 200_000).start()
    assert [len(w) for w in req.writes] == [65536, 70_000 - 65536] and req.finished == 1


def test_a_resume_from_inside_a_write_does_not_start_a_second_loop():
    from downstream_tx.http.download import FileRangeProducer

    class Reentrant(FakeDownloadRequest):
        def write(self, data):
            super().write(data)
            producer = self.registered[0][0]
            producer.pauseProducing()
            producer.resumeProducing()  # the transport drained at once

    req = Reentrant()
    FileRangeProducer(req, io.BytesIO(b"w" * 140_000), 0, 140_000).start()
    assert [len(w) for w in req.writes] == [65536, 65536, 140_000 - 2 * 65536]
    assert req.finished == 1
    # many blocks: the one loop carries on (a nested loop per resume would overflow the stack)
    req = Reentrant()
    producer = FileRangeProducer(req, io.BytesIO(b"v" * 5000), 0, 5000)
    producer.BLOCK = 1
    producer.start()
    assert len(req.writes) == 5000 and req.finished == 1


def test_a_range_download_through_the_server(node, tmp_path):
    from support import StubClient, add_test_file, make_resource, new_token

    file_hash = add_test_file(node, tmp_path, size=1000)
    client = StubClient(make_resource(node))
    url = client.get(f"/api/downstream/chunk/{new_token(client)}").json()["url"]
    path = url[url.index("/api/download/"):]  # the contract's download URL, with its capability
    r = client.get(path)
    data = r.body  # the chunk as stored
    assert (r.code, len(data), r.header("etag")) == (200, 1000, f'"{file_hash}"')
    r = client.get(path, headers={"Range": "bytes=-10"})
    assert (r.code, r.body, r.length) == (206, data[-10:], 10)
    assert (r.header("content-range"), r.header("accept-ranges"), r.header("etag")) == (
        "bytes 990-999/1000", "bytes", f'"{file_hash}"')
    r = client.get(path, headers={"Range": "bytes=1000-"})
    assert (r.code, r.header("content-range")) == (416, "bytes */1000")


def test_a_chunk_removed_before_its_download_is_a_404(tmp_path):
    from twisted.web.test.requesthelper import DummyRequest

    from downstream_tx.http.download import ChunkDownload

    request = DummyRequest([b""])
    body = ChunkDownload(str(tmp_path / "gone.bin"), 10, HASH).render_GET(request)
    assert request.responseCode == 404
    assert body == b'{"status":"no_hash","message":"no such file is stored on this node"}'
