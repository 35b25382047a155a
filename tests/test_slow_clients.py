"""Slow clients (slowloris): a client that sends its request a byte at a time, or opens connections
and never finishes a request, is cut off ``request_timeout`` seconds after the request's first
byte with a 408, while other clients are served. Unit tests drive the site's protocol over a
``StringTransport`` with a ``task.Clock``; one test does it with real sockets against the daemon."""

from __future__ import annotations

import socket
import time
import urllib.request

import orjson
import pytest
from twisted.internet import address, task
from twisted.internet.testing import StringTransport
from twisted.web import resource

from downstream_tx.http.site import DownstreamSite
from support.daemon import Daemon

TIMEOUT = 5.0


class Hello(resource.Resource):
    isLeaf = True

    def render(self, request):
        request.setHeader(b"Content-Type", b"application/json")
        return b'{"hello": "world"}'


def connect(site: DownstreamSite) -> tuple[object, StringTransport]:
    proto = site.buildProtocol(address.IPv4Address("TCP", "192.0.2.1", 12345))
    transport = StringTransport(peerAddress=address.IPv4Address("TCP", "192.0.2.1", 12345))
    proto.makeConnection(transport)
    return proto, transport


@pytest.fixture
def clock():
    return task.Clock()


@pytest.fixture
def site(clock):
    s = DownstreamSite(Hello(), timeout=60.0, request_timeout=TIMEOUT, reactor=clock)
    return s


def status_of(transport: StringTransport) -> int | None:
    data = transport.value()
    if not data.startswith(b"HTTP/1.1 "):
        return None
    return int(data[9:12])


def test_a_request_head_sent_byte_by_byte_is_cut_off_at_the_deadline(site, clock):
    proto, transport = connect(site)
    request = b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000
    for i in range(49):  # one byte every 0.1 s: each byte resets the idle timeout, not the deadline
        proto.dataReceived(request[i:i + 1])
        clock.advance(0.1)
    assert transport.value() == b"" and not transport.disconnecting
    clock.advance(0.11)
    assert status_of(transport) == 408
    body = transport.value().split(b"\r\n\r\n", 1)[1]
    assert orjson.loads(body)["status"] == "request_timeout"
    assert transport.disconnecting
    assert site.timed_out == 1


def test_a_connection_that_sends_nothing_is_closed_at_the_deadline(site, clock):
    _, transport = connect(site)
    clock.advance(TIMEOUT - 0.01)
    assert not transport.disconnecting
    clock.advance(0.01)
    assert status_of(transport) == 408 and transport.disconnecting


def test_a_body_trickled_past_the_deadline_is_cut_off(site, clock):
    proto, transport = connect(site)
    proto.dataReceived(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
    for _ in range(10):
        proto.dataReceived(b"x")
        clock.advance(0.6)
    assert status_of(transport) == 408 and transport.disconnecting


def test_a_client_that_does_not_read_the_408_is_aborted(site, clock):
    proto, transport = connect(site)
    proto.dataReceived(b"GET / HT")
    clock.advance(TIMEOUT)
    assert transport.disconnecting
    proto.connectionLost = lambda reason=None: None  # the transport never finishes closing
    clock.advance(proto.abortTimeout)
    assert transport.disconnected


def test_complete_requests_on_a_keep_alive_connection_are_not_limited_by_the_connection_age(site, clock):
    proto, transport = connect(site)
    for _ in range(5):
        clock.advance(TIMEOUT - 1)  # idle between requests (under the 60 s idle timeout)
        proto.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert transport.value().count(b"HTTP/1.1 200") >= 1
        transport.clear()
    assert not transport.disconnecting
    # the deadline starts with the next request's first byte, not at the end of the last answer
    clock.advance(30)
    assert not transport.disconnecting
    proto.dataReceived(b"GET / HTTP/1.1\r\n")
    clock.advance(TIMEOUT)
    assert status_of(transport) == 408 and transport.disconnecting


def test_a_fast_request_is_answered_and_leaves_no_timer(site, clock):
    proto, transport = connect(site)
    proto.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status_of(transport) == 200
    assert site.timed_out == 0
    proto.connectionLost(None)
    assert all(not call.func.__name__ == "_request_too_slow" for call in clock.getDelayedCalls())


def test_no_deadline_when_request_timeout_is_off(clock):
    site = DownstreamSite(Hello(), timeout=60.0, request_timeout=None, reactor=clock)
    proto, transport = connect(site)
    proto.dataReceived(b"GET / HT")
    clock.advance(59)
    assert not transport.disconnecting
    clock.advance(1)  # the idle timeout still applies
    assert transport.disconnecting


# --- the real daemon --------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.e2e
def test_slowloris_against_the_daemon(tmp_path):
    """50 connections that trickle a request head, 50 that send nothing: each is closed within
    ``request_timeout`` (+ margin), and a normal client is served throughout."""
    request_timeout = 2.0
    # (100 connections from one address: over the per-client cap, which test_connections.py tests)
    with Daemon(tmp_path, ["--data-dir", str(tmp_path / "data"), "--request-timeout", str(request_timeout),
                           "--seeded-pool", "4096:0", "--max-connections-per-client", "0"]) as node:
        slow: list[socket.socket] = []
        opened = time.monotonic()
        for i in range(100):
            s = socket.create_connection(("127.0.0.1", node.port), timeout=10)
            if i % 2 == 0:
                s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
            slow.append(s)
        served = 0
        closed_at: dict[int, float] = {}
        deadline = opened + request_timeout + 5
        while len(closed_at) < len(slow) and time.monotonic() < deadline:
            for i, s in enumerate(slow):
                if i in closed_at:
                    continue
                s.setblocking(False)
                try:
                    if i % 2 == 0:
                        s.send(b"X")  # one more header byte
                    data = s.recv(4096)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                if data == b"" or data.startswith(b"HTTP/1.1 408"):
                    closed_at[i] = time.monotonic() - opened
            with urllib.request.urlopen(f"{node.url}/health", timeout=5) as r:
                assert r.status == 200
                served += 1
            time.sleep(0.05)  # pacing of the test's own client loop
        for s in slow:
            s.close()
        assert len(closed_at) == len(slow), f"still open: {len(slow) - len(closed_at)}"
        worst = max(closed_at.values())
        print(f"\nslowloris: 100 slow connections closed within {worst:.2f}s (request_timeout "
              f"{request_timeout}s); {served} normal requests served meanwhile")
        assert worst < request_timeout + 2.0
        assert served >= 10
        assert "closing a connection whose request was not complete" in node.log()
        assert "127.0.0.1" not in "\n".join(line for line in node.log().splitlines() if "closing" in line)
