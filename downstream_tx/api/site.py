"""The HTTP site: body size caps enforced while the body arrives, idle timeouts, no raw access
log (request paths carry tokens; the request logger logs route patterns instead)."""

from __future__ import annotations

from typing import Any

import orjson
from twisted.web import server


class CappedRequest(server.Request):
    """Refuses a body over the site's cap with a 413 JSON reply, before reading it all."""

    _dtx_received = 0
    _dtx_rejected = False

    def gotLength(self, length: int | None) -> None:
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

    def log(self, request: server.Request) -> None:
        """No raw access log: paths hold tokens."""
