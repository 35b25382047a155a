"""The HTTP site: body size caps enforced while the body arrives, idle timeouts, no raw access
log (request paths carry tokens; the request log below records route patterns and farmer ids
instead), and tracking of requests in flight so a stop can wait for them."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson
from twisted.internet import defer
from twisted.logger import Logger
from twisted.web import server

from downstream_tx.api.common import farmer_of, route_of

request_log = Logger(namespace="downstream_tx.requests")

#: status recorded for a request whose client went away before the answer was complete
CLIENT_GONE = 499


class CappedRequest(server.Request):
    """Refuses a body over the site's cap with a 413 JSON reply, before reading it all."""

    _dtx_received = 0
    _dtx_rejected = False

    def gotLength(self, length: int | None) -> None:
        site = getattr(self.channel, "site", None)
        if isinstance(site, DownstreamSite):
            site.request_started(self)
        super().gotLength(length)
        if length is not None and length > self._cap():
            self._reject()

    def handleContentChunk(self, data: bytes) -> None:
        if self._dtx_rejected:
            return
        self._dtx_received += len(data)
        if self._dtx_received > self._cap():
            self._reject()
            return
        super().handleContentChunk(data)

    def process(self) -> None:
        if self._dtx_rejected:
            return
        super().process()

    def _cap(self) -> int:
        return getattr(self.channel.site, "max_body_size", 1 << 20)

    def _reject(self) -> None:
        self._dtx_rejected = True
        self.code = 413
        body = orjson.dumps({"status": "too_large", "message": f"request body is over {self._cap()} bytes"})
        head = (b"HTTP/1.1 413 Payload Too Large\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body))
        self.channel.transport.write(head + body)
        self.channel.loseConnection()


class DownstreamSite(server.Site):
    requestFactory = CappedRequest
    displayTracebacks = False

    def __init__(self, resource: Any, max_body_size: int = 1 << 20, timeout: float = 60.0, **kwargs: Any):
        super().__init__(resource, timeout=timeout, **kwargs)
        self.max_body_size = max_body_size
        self.noisy = False
        #: requests whose headers arrived and whose answer is not finished
        self.in_flight: set[server.Request] = set()
        #: called with (method, route, status, seconds) after every request (metrics)
        self.observers: list[Callable[[str, str, int, float], None]] = []
        self._drained: list[defer.Deferred] = []
        #: open HTTP connections, so a stop can close them gracefully (flushing answers)
        self.channels: set[Any] = set()
        self._closed: list[defer.Deferred] = []

    def log(self, request: server.Request) -> None:
        """No raw access log: paths hold tokens (see :meth:`request_finished`)."""

    def request_started(self, request: server.Request) -> None:
        request._dtx_started = time.monotonic()
        self.in_flight.add(request)
        request.notifyFinish().addBoth(lambda result: self.request_finished(request, result))

    def request_finished(self, request: server.Request, result: Any) -> None:
        """One log line per request: method, route pattern, status, duration, farmer id — never the
        path or the query, which may carry a token."""
        self.in_flight.discard(request)
        seconds = time.monotonic() - getattr(request, "_dtx_started", time.monotonic())
        status = request.code if result is None or getattr(request, "_dtx_rejected", False) else CLIENT_GONE
        method = request.method.decode("ascii", "replace") if request.method else "-"
        route = route_of(request)
        farmer_id = farmer_of(request)
        fmt = "{method} {route} {status} {duration_ms:.1f}ms"
        if farmer_id:
            fmt += " farmer={farmer_id}"
        request_log.info(fmt, method=method, route=route, status=status, duration_ms=round(seconds * 1000, 3),
                         farmer_id=farmer_id)
        for observer in self.observers:
            observer(method, route, status, seconds)
        if not self.in_flight:
            waiters, self._drained = self._drained, []
            for d in waiters:
                d.callback(None)

    def buildProtocol(self, addr: Any) -> Any:
        channel = super().buildProtocol(addr)
        if channel is None:
            return None
        self.channels.add(channel)
        lost = channel.connectionLost

        def connection_lost(reason: Any) -> None:
            self.channels.discard(channel)
            try:
                lost(reason)
            finally:
                if not self.channels:
                    waiters, self._closed = self._closed, []
                    for d in waiters:
                        d.callback(None)

        channel.connectionLost = connection_lost
        return channel

    def close_connections(self) -> defer.Deferred:
        """Close every connection after its pending output is written (idle keep-alive connections
        at once); fires when all are closed."""
        if not self.channels:
            return defer.succeed(None)
        d: defer.Deferred = defer.Deferred()
        self._closed.append(d)
        for channel in list(self.channels):
            # Twisted wraps each HTTPChannel (``_GenericHTTPChannelProtocol``); the channel's own
            # loseConnection unregisters it as the transport's producer first.  A bare
            # transport.loseConnection() leaves an idle keep-alive connection (what a farmer's
            # requests.Session holds between heartbeats) open until the stop deadline.
            inner = getattr(channel, "_channel", channel)
            lose = getattr(inner, "loseConnection", None)
            if lose is None:
                transport = getattr(channel, "transport", None)
                lose = transport.loseConnection if transport is not None else None
            if lose is not None:
                lose()
        return d

    def drained(self) -> defer.Deferred:
        """Fires when no request is in flight."""
        if not self.in_flight:
            return defer.succeed(None)
        d: defer.Deferred = defer.Deferred()
        self._drained.append(d)
        return d
