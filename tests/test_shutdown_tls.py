"""Clean stop (drain in-flight requests and timer passes, bounded) and TLS through endpoint strings."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import ssl
import time
import urllib.request

import pytest
from twisted.internet import defer, task

from downstream_tx.jobs.periodic import PeriodicJob
from downstream_tx.tap import NodeService
from support import make_config
from support.daemon import Daemon
from support.tls import self_signed


def _wait_until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def _connect_refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


@pytest.mark.e2e
def test_sigterm_lets_a_request_in_flight_finish(tmp_path):
    args = ["--metrics-listen", "tcp:0:interface=127.0.0.1", "--shutdown-timeout", "20"]
    with Daemon(tmp_path, args) as d:
        client = socket.create_connection(("127.0.0.1", d.port), timeout=10)
        # a request whose body is still arriving: headers and half the body
        client.sendall(b"GET / HTTP/1.1\r\nHost: node\r\nContent-Length: 10\r\nConnection: close\r\n\r\n12345")
        _wait_until(lambda: d.metric("downstream_http_requests_in_flight") == 1.0)
        d.signal(signal.SIGTERM)
        d.wait_for_log(r"stopping: waiting for 1 requests in flight")
        assert _connect_refused(d.port)  # no longer accepting
        assert d.proc.poll() is None  # still draining
        client.sendall(b"67890")
        response = b""
        while chunk := client.recv(65536):
            response += chunk
        client.close()
        head, _, body = response.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), response
        if b"transfer-encoding: chunked" in head.lower():
            size, _, rest = body.partition(b"\r\n")
            body = rest[: int(size, 16)]
        assert json.loads(body)["name"] == "downstream-tx"
        d.proc.wait(15)
        assert d.proc.returncode == 0
        assert "GET / 200" in d.log()
        assert "still in flight" not in d.log()


@pytest.mark.e2e
def test_sigterm_stops_within_the_shutdown_timeout_when_a_client_stalls(tmp_path):
    with Daemon(tmp_path, ["--shutdown-timeout", "1", "--metrics-listen", "tcp:0:interface=127.0.0.1"]) as d:
        client = socket.create_connection(("127.0.0.1", d.port), timeout=10)
        client.sendall(b"GET / HTTP/1.1\r\nHost: node\r\nContent-Length: 10\r\n\r\n123")
        _wait_until(lambda: d.metric("downstream_http_requests_in_flight") == 1.0)
        started = time.monotonic()
        d.signal(signal.SIGTERM)
        d.proc.wait(10)
        assert d.proc.returncode == 0
        assert time.monotonic() - started < 5
        assert "1 requests still in flight after 1s" in d.log()
        client.close()


@pytest.mark.e2e
def test_sigterm_closes_idle_keep_alive_connections_at_once(tmp_path):
    """The published farmer (requests.Session) keeps its connection open between heartbeats; a
    stop must close it at once, not wait for the shutdown timeout (found running downstream-farmer
    0.1.8 against the daemon: every restart took the full 10 s)."""
    with Daemon(tmp_path, ["--shutdown-timeout", "20"]) as d:
        conn = http.client.HTTPConnection("127.0.0.1", d.port, timeout=10)
        conn.request("GET", "/")
        response = conn.getresponse()
        assert response.status == 200
        response.read()
        assert response.getheader("Connection", "").lower() != "close"
        client = conn.sock  # still open: HTTP/1.1 keep-alive
        assert client is not None
        started = time.monotonic()
        d.signal(signal.SIGTERM)
        d.proc.wait(15)
        assert d.proc.returncode == 0
        assert time.monotonic() - started < 5, d.log()
        assert client.recv(65536) == b""  # closed by the node
        client.close()
        assert "still in flight" not in d.log()


class Clockish(task.Clock):
    """A Clock with the reactor methods NodeService uses."""

    def callWhenRunning(self, f, *a, **kw):
        pass


def test_stop_waits_for_the_running_timer_pass_bounded_by_shutdown_timeout(tmp_path):
    clock = Clockish()
    service = NodeService(make_config(tmp_path, shutdown_timeout=5.0), clock, environ={})
    passes: list[defer.Deferred] = []

    def slow_pass():
        d: defer.Deferred = defer.Deferred()
        passes.append(d)
        return d

    job = PeriodicJob("slow", slow_pass, 1.0, clock)
    job.setServiceParent(service)
    service.running = True
    job.startService()
    assert len(passes) == 1  # a pass is running
    stopped = service.stopService()
    assert not stopped.called
    clock.advance(1.0)
    assert not stopped.called and len(passes) == 1  # no new pass starts while stopping
    passes[0].callback(None)
    assert stopped.called

    # a pass that never ends: the stop gives up after shutdown_timeout
    service2 = NodeService(make_config(tmp_path, shutdown_timeout=5.0), clock, environ={})
    job2 = PeriodicJob("stuck", lambda: defer.Deferred(), 1.0, clock)
    job2.setServiceParent(service2)
    service2.running = True
    job2.startService()
    stopped2 = service2.stopService()
    clock.advance(4.9)
    assert not stopped2.called
    clock.advance(0.2)
    assert stopped2.called


@pytest.mark.e2e
def test_tls_listener_from_an_endpoint_string(tmp_path):
    key, cert = self_signed(tmp_path)
    listen = f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"
    with Daemon(tmp_path / "node", listen=listen, scheme="https") as d:
        context = ssl.create_default_context(cafile=str(cert))
        with urllib.request.urlopen(d.url + "/health", context=context) as r:
            assert r.status == 200
            assert json.loads(r.read())["status"] == "ok"
        with pytest.raises(urllib.error.URLError):  # the certificate is what makes it trusted
            urllib.request.urlopen(d.url + "/", context=ssl.create_default_context())
        assert d.stop() == 0
