"""Connections the node keeps bounded (issue 20, items 4 and 6): a client that pipelines requests
and does not read its answers, clients holding many connections, file descriptors running out, and
redirects that must not follow the request's Host header.

The unit tests drive the site's protocol over a transport that, like a real one, tells its producer
to pause once more than ``BOUND`` bytes wait to be sent, with a ``task.Clock``; the end-to-end tests
run the real daemon (RSS from ``/proc/<pid>/status``, a low ``RLIMIT_NOFILE`` set in the child)."""

from __future__ import annotations

import builtins
import errno
import gc
import hashlib
import http.client
import os
import socket
import time
import weakref
from urllib.parse import urlsplit

import orjson
import pytest
from twisted.internet import address, task
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web import resource, server

from downstream_tx.http.download import ChunkDownload
from downstream_tx.http.site import DownstreamSite
from support import StubClient, make_address, make_config, make_node, make_resource, open_test_db, run, wait_until
from support.admin import cli
from support.daemon import Daemon

#: bytes waiting to be sent above which the test transport pauses its producer
BOUND = 4096
IDLE = 60.0


class Answer(resource.Resource):
    """Answers every request with 1,500 bytes, at once or (``later``) when the test says."""

    isLeaf = True

    def __init__(self):
        super().__init__()
        self.later: list = []
        self.hold = False

    def render(self, request):
        request.setHeader(b"Content-Type", b"application/json")
        if self.hold:
            self.later.append(request)
            return server.NOT_DONE_YET
        return b'{"x": "' + b"a" * 1490 + b'"}'


class BoundedTransport(StringTransport):
    """A StringTransport that pauses its producer while more than ``BOUND`` written bytes are not
    sent yet, as a socket's transport does; :meth:`drain` is the client reading everything."""

    def __init__(self, peer: str = "192.0.2.1"):
        super().__init__(peerAddress=address.IPv4Address("TCP", peer, 12345), lenient=True)
        self.sent = 0
        self.producer_paused = False

    def write(self, data):
        super().write(data)
        if self.producer is not None and not self.producer_paused and len(self.value()) - self.sent > BOUND:
            self.producer_paused = True
            self.producer.pauseProducing()

    def writeSequence(self, data):
        self.write(b"".join(data))

    def drain(self) -> None:
        self.sent = len(self.value())
        if self.producer_paused:
            self.producer_paused = False
            self.producer.resumeProducing()


def answered(transport: StringTransport, status: bytes = b"200") -> int:
    return transport.value().count(b"HTTP/1.1 " + status)


def request(path: bytes = b"/") -> bytes:
    return b"GET " + path + b" HTTP/1.1\r\nHost: node\r\n\r\n"


@pytest.fixture
def clock():
    return task.Clock()


@pytest.fixture
def answer():
    return Answer()


def open_site(answer, clock, **kwargs) -> DownstreamSite:
    return DownstreamSite(answer, timeout=IDLE, request_timeout=None, reactor=clock, **kwargs)


def connect(site: DownstreamSite, peer: str = "192.0.2.1"):
    transport = BoundedTransport(peer)
    proto = site.buildProtocol(transport.getPeer())
    if proto is None:
        return None, transport
    proto.makeConnection(transport)
    return proto, transport


# --- a client that pipelines and does not read --------------------------------------------------

def test_pipelined_requests_wait_while_the_client_does_not_read(answer, clock):
    site = open_site(answer, clock, max_pipelined=100)
    proto, transport = connect(site)
    proto.dataReceived(request() * 20)
    # three answers of 1.5 KB go above the 4 KB bound: the others wait, nothing more is read
    assert answered(transport) == 3
    assert transport.producerState == "paused"
    assert site.stalled == {proto}
    proto.dataReceived(request() * 5)  # (a transport that was paused delivers nothing; a test can)
    assert answered(transport) == 3
    while answered(transport) < 25:
        before = answered(transport)
        transport.drain()  # the client reads: the next answers are made
        assert answered(transport) > before
    assert transport.producerState == "producing" and not site.stalled
    assert len(site.in_flight) == 0


def test_the_connection_is_not_read_while_an_answer_in_progress_backs_up(answer, clock):
    """twisted.web pauses reading only between requests: a slow answer that fills the output
    buffer left the connection read (and its pipelined requests buffered) without bound."""
    answer.hold = True
    site = open_site(answer, clock)
    proto, transport = connect(site)
    proto.dataReceived(request())
    [first] = answer.later
    first.write(b"b" * (2 * BOUND))  # the answer is not finished, the output is full
    assert transport.producerState == "paused"
    transport.drain()
    first.finish()
    assert transport.producerState == "producing"


def test_a_client_that_reads_nothing_is_disconnected_after_the_idle_timeout(answer, clock):
    site = open_site(answer, clock, max_pipelined=100)
    proto, transport = connect(site)
    proto.dataReceived(request() * 10)
    assert transport.producerState == "paused"
    clock.advance(IDLE - 1)
    transport.drain()  # it read something: the timer starts again at the next stall
    assert not transport.disconnecting
    clock.advance(IDLE - 1)
    assert not transport.disconnecting
    clock.advance(1)
    assert transport.disconnected  # aborted: its unread answers are dropped
    assert site.closed == {"stalled": 1}


def test_requests_pipelined_beyond_the_cap_are_refused_with_429(answer, clock):
    site = open_site(answer, clock, max_pipelined=3)
    proto, transport = connect(site)
    proto.dataReceived(request() * 8)
    while transport.producer_paused:
        transport.drain()
    # the first request and three pipelined behind it are answered; the next is refused, the
    # connection closes once the answers are written, and nothing after it is answered
    assert answered(transport) == 4
    assert answered(transport, b"429") == 1
    body = transport.value().rsplit(b"\r\n\r\n", 1)[1]
    assert orjson.loads(body)["status"] == "too_many_pipelined"
    assert transport.disconnecting
    assert site.closed == {"pipelined": 1}


def test_a_client_that_waits_for_each_answer_is_never_pipelining(answer, clock):
    site = open_site(answer, clock, max_pipelined=1)
    proto, transport = connect(site)
    for n in range(1, 11):
        proto.dataReceived(request())
        transport.drain()
        assert answered(transport) == n
    assert not transport.disconnecting


def test_a_closed_connection_is_freed_at_once_with_its_unsent_answers(answer, clock):
    """Nothing keeps a closed connection in a reference cycle: its channel, and with it the
    transport holding the answers its client never read, go as soon as the connection is lost,
    not at the next full garbage collection (which an idle daemon may not run for a long time:
    the memory of a pipelining attack stayed after its connection closed)."""
    site = open_site(answer, clock, max_pipelined=100)
    proto, transport = connect(site)
    proto.dataReceived(request() * 10)
    assert transport.producer_paused  # answers wait in the transport
    channel, sent = weakref.ref(proto), weakref.ref(transport)
    gc.disable()
    try:
        transport.unregisterProducer()  # (what a real transport does when its connection is lost)
        proto.connectionLost(Failure(ConnectionDone()))
        del proto, transport
        assert channel() is None and sent() is None
    finally:
        gc.enable()
    assert not site.channels and not site.stalled


# --- connections per client -----------------------------------------------------------------------

def test_connections_over_the_per_client_cap_are_closed_at_accept(answer, clock):
    site = open_site(answer, clock, max_connections_per_client=3)
    first = [connect(site, "192.0.2.1")[0] for _ in range(3)]
    assert all(first)
    assert connect(site, "192.0.2.1")[0] is None
    # another client is not affected
    assert connect(site, "192.0.2.2")[0] is not None
    assert site.closed == {"per_client": 1}
    # a closed connection frees its place
    first[0].connectionLost(None)
    assert connect(site, "192.0.2.1")[0] is not None
    assert connect(site, "192.0.2.1")[0] is None


def test_the_per_client_cap_counts_an_ipv6_64_and_v4_mapped_addresses_as_one_client(answer, clock):
    site = open_site(answer, clock, max_connections_per_client=2)
    cap = site.connection_cap
    assert cap.key(address.IPv6Address("TCP", "2001:db8:1:2::1", 1)) == \
        cap.key(address.IPv6Address("TCP", "2001:db8:1:2:ffff::9", 1))
    assert cap.key(address.IPv6Address("TCP", "::ffff:192.0.2.7", 1)) == \
        cap.key(address.IPv4Address("TCP", "192.0.2.7", 1))
    for host in ("2001:db8:1:2::1", "2001:db8:1:2::2"):
        assert site.buildProtocol(address.IPv6Address("TCP", host, 1)) is not None
    assert site.buildProtocol(address.IPv6Address("TCP", "2001:db8:1:2::3", 1)) is None
    assert site.buildProtocol(address.IPv6Address("TCP", "2001:db8:1:3::1", 1)) is not None


def test_trusted_proxies_and_unix_sockets_are_not_capped(answer, clock):
    from ipaddress import ip_network

    site = open_site(answer, clock, max_connections_per_client=1, trusted_proxies=(ip_network("10.0.0.0/8"),))
    for _ in range(5):
        assert site.buildProtocol(address.IPv4Address("TCP", "10.1.2.3", 1)) is not None
        assert site.buildProtocol(address.IPv6Address("TCP", "::ffff:10.1.2.3", 1)) is not None
        assert site.buildProtocol(address.UNIXAddress(b"/run/downstream/api.sock")) is not None
    assert not site.closed


def test_no_cap_when_it_is_zero(answer, clock):
    site = open_site(answer, clock, max_connections_per_client=0)
    assert all(connect(site)[0] is not None for _ in range(200))


# --- file descriptors ------------------------------------------------------------------------------

def test_a_download_without_a_file_descriptor_answers_503_with_retry_after(tmp_path, monkeypatch):
    from twisted.web.test.requesthelper import DummyRequest

    chunk = tmp_path / "chunk"
    chunk.write_bytes(b"x" * 100)
    real_open = builtins.open

    def no_descriptor(path, *args, **kwargs):
        if str(path) == str(chunk):
            raise OSError(errno.EMFILE, "Too many open files")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", no_descriptor)
    req = DummyRequest([b""])
    body = ChunkDownload(str(chunk), 100, "ab" * 32).render_GET(req)
    assert req.responseCode == 503
    assert req.responseHeaders.getRawHeaders(b"retry-after") == [b"5"]
    assert req.responseHeaders.getRawHeaders(b"etag") is None
    assert orjson.loads(body)["status"] == "unavailable"


# --- redirects --------------------------------------------------------------------------------------

@pytest.mark.parametrize("public_url", [None, "https://node.example.org/dtx"])
def test_a_redirect_never_points_at_the_requests_host_header(tmp_path, public_url):
    config = make_config(tmp_path, "sqlite:///" + str(tmp_path / "data" / "downstream.db"), public_url=public_url)
    node = make_node(config)
    try:
        client = StubClient(make_resource(node))
        r = client.get("/api/downstream/v1/status/list", headers={"Host": "evil.example:666"},
                       allow_redirects=False)
    finally:
        node.db.close()
    expected = (public_url or "") + "/api/downstream/v1/status/list/"
    assert r.code == 308
    assert r.header("location") == expected
    assert r.json() == {"status": "redirect", "location": expected}


# --- against the real daemon -------------------------------------------------------------------------

MIB = 1 << 20
#: how much the daemon's RSS may grow under the attack (it grew ~16 MiB a second before the fix)
RSS_BOUND = 100 * MIB
LIST_PAGE = "/api/downstream/v1/status/list/1000"


def rss(d: Daemon) -> int:
    with open(f"/proc/{d.proc.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def get(d: Daemon, path: str, source: str = "127.0.0.1") -> tuple[int, dict[str, str], bytes]:
    """One request on a new connection from ``source`` (a loopback address): status, headers, body."""
    conn = http.client.HTTPConnection("127.0.0.1", d.port, timeout=30, source_address=(source, 0))
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def fill_farmers(tmp_path, n: int) -> None:
    """``n`` farmers (tokens without contracts) in the daemon's SQLite database."""
    db = open_test_db(make_config(tmp_path, "sqlite:///" + str(tmp_path / "data" / "downstream.db")), task.Clock())
    rows = [(os.urandom(32), os.urandom(10).hex(), make_address(1)) for _ in range(n)]
    run(db.run("fill", lambda txn: txn.executemany(
        "INSERT INTO tokens (token_hash, farmer_id, address, created) VALUES (?, ?, ?, 0)", rows)))
    db.close()


class HonestFarmer:
    """A v1 farmer that asks for its heartbeat and its status; every answer is checked."""

    def __init__(self, d: Daemon, source: str = "127.0.0.1"):
        self.d, self.source = d, source
        code, _, body = get(d, "/api/downstream/v1/new/" + make_address(2), source)
        assert code == 200, body
        self.token = orjson.loads(body)["token"]
        self.farmer_id = hashlib.sha256(bytes.fromhex(self.token)).hexdigest()[:20]

    def round(self) -> None:
        code, _, body = get(self.d, f"/api/downstream/v1/heartbeat/{self.token}", self.source)
        assert code == 200 and "heartbeat" in orjson.loads(body), body
        code, _, body = get(self.d, f"/api/downstream/v1/status/show/{self.farmer_id}", self.source)
        assert code == 200 and orjson.loads(body)["id"] == self.farmer_id, body


@pytest.mark.e2e
def test_a_client_that_pipelines_and_never_reads_leaves_the_daemons_memory_bounded(tmp_path):
    """One connection pipelines 120 KB of requests for a 1,000-farmer page (about 330 KB an answer)
    and never reads: the daemon stops answering it once its output backs up (RSS within +100 MiB;
    before the fix it answered every request into memory) and serves an honest farmer meanwhile."""
    fill_farmers(tmp_path, 3000)
    # the pipelining cap is raised so that it is the backpressure that holds the attack here
    args = ["--data-dir", str(tmp_path / "data"), "--seeded-pool", "4096:0",
            "--metrics-listen", "tcp:0:interface=127.0.0.1"]
    with Daemon(tmp_path / "run", args, env={"DOWNSTREAM_MAX_PIPELINED": "10000"}) as d:
        farmer = HonestFarmer(d)
        assert len(orjson.loads(get(d, LIST_PAGE)[2])["farmers"]) == 1000
        for _ in range(3):
            farmer.round()
        baseline = rss(d)
        attacker = socket.socket()
        attacker.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        attacker.connect(("127.0.0.1", d.port))
        attacker.setblocking(False)
        pipelined = f"GET {LIST_PAGE} HTTP/1.1\r\nHost: node\r\n\r\n".encode() * 3000  # 120 KB
        sent = 0
        stalled = False
        deadline = time.monotonic() + 60
        while not stalled:  # until the daemon says the connection's output waits for its client
            assert time.monotonic() < deadline, "the attacker's connection never stalled"
            try:
                sent += attacker.send(pipelined[sent:sent + 65536])
            except BlockingIOError:
                pass
            farmer.round()
            assert rss(d) - baseline < RSS_BOUND, f"RSS grew by {(rss(d) - baseline) / MIB:.0f} MiB"
            stalled = d.metric("downstream_http_connections_stalled") == 1.0
        for _ in range(20):  # it stays stalled, the others are served, memory stays put
            farmer.round()
            assert rss(d) - baseline < RSS_BOUND, f"RSS grew by {(rss(d) - baseline) / MIB:.0f} MiB"
        assert d.metric("downstream_http_connections_stalled") == 1.0
        answered = d.log().count(f"GET {LIST_PAGE.rsplit('/', 1)[0]}/<int:limit> 200")
        assert answered < 100, answered
        attacker.close()
        wait_until(lambda: d.metric("downstream_http_connections_stalled") == 0.0, 10, "the closed connection gone")
        farmer.round()


def open_connections(d: Daemon, count: int) -> list[socket.socket]:
    """``count`` idle connections from 127.0.0.1 (fewer if the kernel's queue refuses more)."""
    made = []
    for _ in range(count):
        try:
            made.append(socket.create_connection(("127.0.0.1", d.port), timeout=5))
        except OSError:
            break
    return made


def still_open(sockets: list[socket.socket]) -> list[socket.socket]:
    """The connections the daemon has not closed (a closed one reads end-of-file)."""
    alive = []
    for s in sockets:
        s.setblocking(False)
        try:
            if s.recv(1) == b"":
                continue
        except BlockingIOError:
            pass
        except OSError:
            continue
        alive.append(s)
    return alive


@pytest.mark.e2e
def test_one_client_with_many_idle_connections_does_not_starve_the_others(tmp_path):
    """Under a 128-descriptor limit one client opens 200 idle connections: the daemon keeps the
    default 64 per client (closing the others at accept), and a client on another address is served
    30 times out of 30 (before, the idle connections took every descriptor and it was not)."""
    args = ["--data-dir", str(tmp_path / "data"), "--seeded-pool", "4096:0", "--request-timeout", "300"]
    with Daemon(tmp_path / "run", args, nofile=128) as d:
        idle = open_connections(d, 200)
        assert len(idle) == 200
        wait_until(lambda: len(still_open(idle)) <= 64, 20, "the connections over the per-client cap closed")
        assert len(still_open(idle)) == 64
        farmer = HonestFarmer(d, source="127.0.0.2")
        for _ in range(15):
            farmer.round()  # two requests each
        assert len(still_open(idle)) == 64  # the idle ones were not touched
        assert "new connections at accept: their client already had 64 open" in d.log()
        for s in idle:
            s.close()


@pytest.mark.e2e
def test_a_download_when_descriptors_run_out_answers_503_and_the_listener_recovers(tmp_path):
    """Idle connections take every descriptor of a daemon limited to 64: a download asked on a
    connection opened before answers 503 with Retry-After (it was a 500); once the connections
    close, new ones are accepted and the download is served."""
    chunk = tmp_path / "chunk.bin"
    chunk.write_bytes(os.urandom(100_000))
    added = cli(tmp_path, "file", "add", str(chunk), "--redundancy", "1", "--interval", "600")
    assert added.returncode == 0, added.stderr
    args = ["--data-dir", str(tmp_path / "data"), "--seeded-pool", "4096:0", "--request-timeout", "300",
            "--idle-timeout", "300"]
    with Daemon(tmp_path / "run", args, nofile=64) as d:
        farmer = http.client.HTTPConnection("127.0.0.1", d.port, timeout=30)  # one keep-alive connection
        farmer.request("GET", "/api/downstream/new/" + make_address(3))
        token = orjson.loads(farmer.getresponse().read())["token"]
        farmer.request("GET", f"/api/downstream/chunk/{token}")
        url = urlsplit(orjson.loads(farmer.getresponse().read())["url"])
        download = url.path + (f"?{url.query}" if url.query else "")
        idle = open_connections(d, 100)
        wait_until(lambda: d.open_descriptors() >= 64, 20, "the daemon out of descriptors")
        farmer.request("GET", download)
        r = farmer.getresponse()
        body = r.read()
        assert r.status == 503, body
        assert r.getheader("Retry-After") == "5"
        assert r.getheader("Content-Type") == "application/json"
        assert orjson.loads(body)["status"] == "unavailable"
        assert "Traceback" not in d.log()
        for s in idle:
            s.close()
        farmer.close()
        wait_until(lambda: d.open_descriptors() < 40, 20, "the idle connections closed")
        code, _, data = get(d, download)
        assert code == 200 and hashlib.sha256(data).hexdigest() == url.path.rsplit("/", 1)[1]
