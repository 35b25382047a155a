"""The HTTP site: body size caps enforced while the body arrives, a deadline for receiving each
whole request, idle timeouts, connections bounded in memory (backpressure.py) and in number per
client (peers.py), no raw access log (request paths carry tokens; the request log below records
route patterns and farmer ids instead), and tracking of requests in flight so a stop can wait for
them."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import orjson
from twisted.internet import defer
from twisted.logger import Logger
from twisted.web import server

from downstream_tx.http.backpressure import BackpressureChannel, cancel
from downstream_tx.http.facts import RequestFacts, facts_of
from downstream_tx.http.peers import ConnectionCap
from downstream_tx.logs import PREFORMATTED, escape_format

request_log = Logger(namespace="downstream_tx.requests")

#: status recorded for a request whose client went away before the answer was complete
CLIENT_GONE = 499


class CappedRequest(server.Request):
    """Refuses a body over the site's cap with a 413 JSON reply, before reading it all."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.dtx_facts = RequestFacts()

    def gotLength(self, length: int | None) -> None:
        site = getattr(self.channel, "site", None)
        if isinstance(site, DownstreamSite):
            site.request_started(self)
        super().gotLength(length)
        over = getattr(self.channel, "over_pipeline_cap", None)
        if over is not None and over():
            if isinstance(site, DownstreamSite):
                site.connection_closed("pipelined")
            self._refuse(429, b"Too Many Requests", "too_many_pipelined",
                         f"more than {self.channel.max_pipelined} requests were sent on one connection ahead of "
                         "their answers; read the answers before sending more")
        elif length is not None and length > self._cap():
            self._reject()

    def handleContentChunk(self, data: bytes) -> None:
        facts = self.dtx_facts
        if facts.rejected:
            return
        facts.received += len(data)
        if facts.received > self._cap():
            self._reject()
            return
        super().handleContentChunk(data)

    def process(self) -> None:
        if self.dtx_facts.rejected:
            return
        super().process()

    def _cap(self) -> int:
        site = self.channel.site
        if not isinstance(site, DownstreamSite):
            return 1 << 20
        return site.body_cap(getattr(self.channel, "_path", b"") or b"")

    def _reject(self) -> None:
        self._refuse(413, b"Payload Too Large", "too_large", f"request body is over {self._cap()} bytes")

    def _refuse(self, code: int, reason: bytes, status: str, message: str) -> None:
        """Answer ``code`` with a JSON error before the request is processed (its body, if any, is
        not read) and close the connection once the answer is written."""
        self.dtx_facts.rejected = True
        self.code = code
        body = orjson.dumps({"status": status, "message": message})
        head = (b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\nConnection: close\r\n\r\n" % (code, reason, len(body)))
        self.channel.transport.write(head + body)
        self.channel.loseConnection()


class DeadlineChannel(BackpressureChannel):
    """An HTTP/1.1 connection that must deliver each request, head and body, within the site's
    ``request_timeout`` seconds of the request's first byte (of the connection's opening, for the
    first request).

    twisted.web's own timeout is an idle timeout, reset by every byte received: a client sending
    one header byte every few seconds (slowloris) or a body at a trickle would hold its connection
    open for ever. Past the deadline the client gets ``408`` (JSON) and the connection is closed
    (aborted ``abortTimeout`` seconds later if the client does not read). While a request is being
    answered the deadline is off (pipelined bytes wait in twisted's buffer); it starts again with
    the next request's first byte. Timeouts are logged without the peer's address.
    """

    _deadline: Any = None
    #: what the connection counts under in the site's per-client cap (None: not capped)
    client_key: str | None = None

    def _request_timeout(self) -> float | None:
        return getattr(self.site, "request_timeout", None) or None

    def connectionMade(self) -> None:
        super().connectionMade()
        self._arm()

    def dataReceived(self, data: bytes) -> None:
        if self._deadline is None and not self._handlingRequest:
            self._arm()
        super().dataReceived(data)

    def allContentReceived(self) -> None:
        self._disarm()
        super().allContentReceived()

    def connectionLost(self, reason: Any) -> None:
        self._disarm()
        try:
            super().connectionLost(reason)
        finally:
            site = getattr(self, "site", None)
            if isinstance(site, DownstreamSite):
                site.channel_lost(self)

    def _arm(self) -> None:
        timeout = self._request_timeout()
        if timeout is not None and self._deadline is None and self.transport is not None:
            self._deadline = self.callLater(timeout, self._request_too_slow)

    def _disarm(self) -> None:
        cancel(self._deadline)
        self._deadline = None

    def _request_too_slow(self) -> None:
        self._deadline = None
        if self._handlingRequest or self.transport is None or getattr(self.transport, "disconnecting", False):
            return
        request_log.info("closing a connection whose request was not complete within {timeout:g}s",
                         timeout=self._request_timeout())
        site = self.site
        if isinstance(site, DownstreamSite):
            site.timed_out += 1
            site.connection_closed("request_timeout")
        body = orjson.dumps({"status": "request_timeout",
                             "message": f"the request was not complete within {self._request_timeout():g} seconds"})
        self.transport.write(b"HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
        self._close_soon()

    def timeoutConnection(self) -> None:
        """The idle timeout (twisted's logs the peer's address; the node logs no IPs)."""
        request_log.debug("closing an idle connection")
        self._close_soon()

    def _close_soon(self) -> None:
        if self.abortTimeout is not None:
            self._abortingCall = self.callLater(self.abortTimeout, self.forceAbortClient)
        self.loseConnection()

    def forceAbortClient(self) -> None:
        self._abortingCall = None
        self.transport.abortConnection()


class DownstreamSite(server.Site):
    requestFactory = CappedRequest
    protocol = DeadlineChannel
    displayTracebacks = False

    def __init__(self, resource: Any, max_body_size: int = 1 << 20, timeout: float = 60.0,
                 request_timeout: float | None = 30.0, batch_body_size: int | None = None,
                 batch_paths: tuple[bytes, ...] = (), max_pipelined: int | None = None,
                 max_connections_per_client: int = 0, trusted_proxies: tuple = (),
                 observers: Iterable[Callable[[str, str, int, float], None]] = (),
                 connection_observers: Iterable[Callable[[str], None]] = (), **kwargs: Any):
        super().__init__(resource, timeout=timeout, **kwargs)
        #: requests answered from one connection's buffered input in a row, most (backpressure.py)
        self.max_pipelined = max_pipelined
        #: open connections per client, capped at accept (peers.py)
        self.connection_cap = ConnectionCap(max_connections_per_client, trusted_proxies, self.reactor)
        #: connections whose output waits for their client to read (their input is not read meanwhile)
        self.stalled: set[Any] = set()
        #: connections closed for a connection limit, by limit: ``per_client`` (at accept),
        #: ``pipelined``, ``stalled`` (read nothing for the idle timeout), ``request_timeout``
        self.closed: dict[str, int] = {}
        #: called with the limit's name for each of them (metrics)
        self.connection_observers: list[Callable[[str], None]] = list(connection_observers)
        self.max_body_size = max_body_size
        #: the cap of bodies whose path starts with one of ``batch_paths`` (batches of items)
        self.batch_body_size = batch_body_size or max_body_size
        self.batch_paths = batch_paths
        #: seconds a client has to send a whole request (None: no deadline)
        self.request_timeout = request_timeout
        #: connections closed because their request was too slow
        self.timed_out = 0
        self.noisy = False
        #: requests whose headers arrived and whose answer is not finished
        self.in_flight: set[server.Request] = set()
        #: called with (method, route, status, seconds) after every request (metrics)
        self.observers: list[Callable[[str, str, int, float], None]] = list(observers)
        self._drained: list[defer.Deferred] = []
        #: open HTTP connections, so a stop can close them gracefully (flushing answers)
        self.channels: set[Any] = set()
        self._closed: list[defer.Deferred] = []

    def body_cap(self, path: bytes) -> int:
        """The largest body a request for ``path`` may send."""
        if self.batch_paths and path.startswith(self.batch_paths):
            return self.batch_body_size
        return self.max_body_size

    def log(self, request: server.Request) -> None:
        """No raw access log: paths hold tokens (see :meth:`request_finished`)."""

    def request_started(self, request: server.Request) -> None:
        facts = facts_of(request)
        facts.started = time.monotonic()
        facts.arrived = self.reactor.seconds()  # late answers are judged by it (domain/verdicts.py)
        self.in_flight.add(request)
        request.notifyFinish().addBoth(lambda result: self.request_finished(request, result))

    def request_finished(self, request: server.Request, result: Any) -> None:
        """One log line per request: method, route pattern, status, duration, farmer id — never the
        path or the query, which may carry a token."""
        self.in_flight.discard(request)
        facts = facts_of(request)
        now = time.monotonic()
        seconds = now - (now if facts.started is None else facts.started)
        status = request.code if result is None or facts.rejected else CLIENT_GONE
        method = request.method.decode("ascii", "replace") if request.method else "-"
        route = facts.route or "unmatched"
        farmer_id = facts.farmer
        outcome = facts.outcome
        duration_ms = round(seconds * 1000, 3)
        # the line is formatted here once (not by the logging system from a format string, per
        # observer); the event still carries each field (JSON lines show them)
        line = f"{method} {route} {status} {duration_ms:.1f}ms"
        if farmer_id:
            line += f" farmer={farmer_id}"
        if outcome:
            line += f" outcome={outcome}"
        request_log.info(escape_format(line), method=method, route=route, status=status, duration_ms=duration_ms,
                         farmer_id=farmer_id, outcome=outcome, **{PREFORMATTED: line})
        for observer in self.observers:
            observer(method, route, status, seconds)
        if not self.in_flight:
            waiters, self._drained = self._drained, []
            for d in waiters:
                d.callback(None)

    def connection_closed(self, reason: str) -> None:
        """A connection closed for the limit ``reason`` (see :attr:`closed`)."""
        self.closed[reason] = self.closed.get(reason, 0) + 1
        for observer in self.connection_observers:
            observer(reason)

    def output_stalled(self, channel: Any, stalled: bool) -> None:
        """A connection's output went above its transport's buffer bound (True) or drained."""
        if stalled:
            self.stalled.add(channel)
        else:
            self.stalled.discard(channel)

    def buildProtocol(self, addr: Any) -> Any:
        key = self.connection_cap.key(addr)
        if not self.connection_cap.admit(key):
            self.connection_closed("per_client")
            return None  # the listening port closes the new connection at once
        channel = super().buildProtocol(addr)
        if channel is None:
            self.connection_cap.release(key)
            return None
        channel.max_pipelined = self.max_pipelined
        channel.client_key = key
        self.channels.add(channel)
        return channel

    def channel_lost(self, channel: Any) -> None:
        """A connection of this site closed (its channel says so: no closure here may refer to the
        channel, or channel and transport, with any unsent answer, would live on in a reference
        cycle until the next full garbage collection)."""
        if channel not in self.channels:
            return
        self.channels.discard(channel)
        self.connection_cap.release(getattr(channel, "client_key", None))
        if not self.channels:
            waiters, self._closed = self._closed, []
            for d in waiters:
                d.callback(None)

    def close_connections(self) -> defer.Deferred:
        """Close every connection after its pending output is written (idle keep-alive connections
        at once); fires when all are closed."""
        if not self.channels:
            return defer.succeed(None)
        d: defer.Deferred = defer.Deferred()
        self._closed.append(d)
        for channel in list(self.channels):
            # the HTTP channel's own loseConnection: it first unregisters the channel as the
            # transport's producer (a transport with a producer registered never closes, so an idle
            # keep-alive client held the stop for the whole shutdown timeout)
            inner = getattr(channel, "_channel", channel)  # _GenericHTTPChannelProtocol wraps it
            close = getattr(inner, "loseConnection", None)
            if close is None:
                transport = getattr(channel, "transport", None)
                close = getattr(transport, "loseConnection", None)
            if close is not None:
                close()
        return d

    def drained(self) -> defer.Deferred:
        """Fires when no request is in flight."""
        if not self.in_flight:
            return defer.succeed(None)
        d: defer.Deferred = defer.Deferred()
        self._drained.append(d)
        return d
