"""Requests to one node, on treq: JSON calls and streamed downloads, every reply read with a size cap
and an idle timeout, every failure sorted into what the farmer does about it.

- :class:`NodeUnavailable`: the node did not answer (refused, reset, timed out), answered 5xx or
  429/408, or sent a 200 that is not JSON. The farmer backs off (``retry_after`` is the node's
  ``Retry-After`` when it sent one) and keeps its contracts.
- :class:`NodeRefused`: any other 4xx. ``status`` and ``message`` are the error body's (v0: a code
  such as ``no_token``; v1: ``"error"`` and the original's text such as ``Nonexistent token.``).
"""

from __future__ import annotations

import email.utils
from collections.abc import Callable
from typing import Any, Protocol

import orjson
from twisted.internet import defer, error
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol as TwistedProtocol
from twisted.python.failure import Failure
from twisted.web.client import (
    RequestNotSent,
    RequestTransmissionFailed,
    ResponseDone,
    ResponseFailed,
    ResponseNeverReceived,
)
from twisted.web.http import PotentialDataLoss

#: the most a JSON reply may hold (a /due list of 10,000 contracts is about 1.5 MB)
MAX_JSON = 64 << 20
#: a Retry-After longer than this is taken as this
MAX_RETRY_AFTER = 3600.0
#: statuses after which the same request may succeed later
TRANSIENT = frozenset({408, 429, 500, 502, 503, 504})


class NodeProblem(Exception):
    """Something the farmer cannot do with this node right now."""


class NodeUnavailable(NodeProblem):
    def __init__(self, reason: str, retry_after: float | None = None, code: int | None = None):
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.code = code


class NodeRefused(NodeProblem):
    def __init__(self, code: int, status: str, message: str):
        super().__init__(f"{code} {status}: {message}")
        self.code = code
        self.status = status
        self.message = message


class HttpClient(Protocol):
    """What the farmer uses of treq's ``HTTPClient`` (``treq.testing.StubTreq`` is one too)."""

    def request(self, method: str, url: str, **kwargs: Any) -> defer.Deferred: ...


def retry_after(value: str | bytes | None, now: float) -> float | None:
    """Seconds a ``Retry-After`` header asks for (delta seconds or an HTTP date), within
    ``[0, MAX_RETRY_AFTER]``; None when absent or unreadable."""
    if value is None:
        return None
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    text = text.strip()
    if text.isdigit():
        return min(float(text), MAX_RETRY_AFTER)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return min(max(0.0, when.timestamp() - now), MAX_RETRY_AFTER)


class TooLarge(Exception):
    pass


class BodyReader(TwistedProtocol):
    """Hands a response body to ``sink`` piece by piece; fails on more than ``limit`` bytes or when
    nothing arrives for ``idle`` seconds (the connection is dropped). ``done`` fires with the byte
    count."""

    def __init__(self, sink: Callable[[bytes], None], limit: int | None, clock: IReactorTime, idle: float):
        self.sink = sink
        self.limit = limit
        self.clock = clock
        self.idle = idle
        self.count = 0
        self.done: defer.Deferred = defer.Deferred()
        self._timer = clock.callLater(idle, self._stalled)

    def dataReceived(self, data: bytes) -> None:
        if self.done.called:
            return
        self.count += len(data)
        try:
            if self.limit is not None and self.count > self.limit:
                raise TooLarge(f"the reply is over {self.limit} bytes")
            self.sink(data)
        except Exception:
            self._fail(Failure())
            return
        if self._timer.active():
            self._timer.reset(self.idle)

    def _stalled(self) -> None:
        self._fail(Failure(error.TimeoutError(f"no data for {self.idle:g} s")))

    def _fail(self, failure: Failure) -> None:
        if self._timer.active():
            self._timer.cancel()
        if not self.done.called:
            self.done.errback(failure)
        if self.transport is not None:
            self.transport.stopProducing()

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        if self._timer.active():
            self._timer.cancel()
        if self.done.called:
            return
        if reason is None or reason.check(ResponseDone, PotentialDataLoss):
            self.done.callback(self.count)
        else:
            self.done.errback(reason)


def _describe(failure: Failure) -> str:
    if failure.check(ResponseFailed, ResponseNeverReceived, RequestTransmissionFailed):
        reasons = [f.getErrorMessage() or f.type.__name__ for f in failure.value.reasons]
        if any("certificate verify failed" in r for r in reasons):
            return ("the node's TLS certificate could not be verified (" + "; ".join(reasons) + "); "
                    "--ssl-no-verify accepts any certificate")
        return "the connection broke (" + "; ".join(reasons) + ")"
    if failure.check(defer.CancelledError, error.TimeoutError):
        return "no answer in time"
    if failure.check(error.ConnectionRefusedError):
        return "connection refused"
    return failure.getErrorMessage() or failure.type.__name__


#: request failures that mean "the node is not answering now"
NETWORK_ERRORS = (error.ConnectError, error.ConnectionLost, error.ConnectionDone, error.DNSLookupError,
                  error.TimeoutError, defer.CancelledError, ResponseFailed, ResponseNeverReceived,
                  RequestTransmissionFailed, RequestNotSent, error.ConnectingCancelledError)


class NodeClient:
    """One node at ``base`` (its URL without a trailing slash)."""

    def __init__(self, base: str, http: HttpClient, clock: IReactorTime, timeout: float = 30.0):
        self.base = base.rstrip("/")
        self.http = http
        self.clock = clock
        self.timeout = timeout

    def url(self, path: str) -> str:
        return path if "://" in path else self.base + path

    async def send(self, method: str, path: str, body: bytes | None = None,
                   headers: dict[str, str] | None = None) -> Any:
        """The response of one request (headers read), or :class:`NodeUnavailable`."""
        try:
            return await self.http.request(method, self.url(path), data=body, headers=headers or {},
                                           unbuffered=True, reactor=self.clock, timeout=self.timeout)
        except NETWORK_ERRORS as e:
            raise NodeUnavailable(_describe(Failure(e))) from None

    async def read(self, response: Any, sink: Callable[[bytes], None], limit: int | None) -> int:
        """Stream ``response``'s body into ``sink``; the byte count, or :class:`NodeUnavailable`."""
        reader = BodyReader(sink, limit, self.clock, self.timeout)
        response.deliverBody(reader)
        try:
            return await reader.done
        except TooLarge as e:
            raise NodeUnavailable(str(e)) from None
        except NETWORK_ERRORS as e:
            raise NodeUnavailable(_describe(Failure(e))) from None

    async def call(self, method: str, path: str, payload: Any = None, headers: dict[str, str] | None = None,
                   raw: bytes | None = None) -> Any:
        """A JSON request (``payload`` as JSON, or ``raw`` bytes) and its parsed 200 reply."""
        headers = dict(headers or {})
        body = raw
        if payload is not None:
            body = orjson.dumps(payload)
        if body is not None:
            headers.setdefault("Content-Type", "application/json")
        response = await self.send(method, path, body, headers)
        pieces: list[bytes] = []
        await self.read(response, pieces.append, MAX_JSON)
        data = b"".join(pieces)
        code = response.code
        if code == 200:
            try:
                return orjson.loads(data)
            except orjson.JSONDecodeError:
                raise NodeUnavailable(f"{method} {path}: the node's 200 reply is not JSON") from None
        status, message = _error_body(data)
        if code in TRANSIENT:
            wait = retry_after(_header(response, "Retry-After"), self.clock.seconds())
            raise NodeUnavailable(f"{code} {status}: {message}", wait, code)
        raise NodeRefused(code, status, message)


def _header(response: Any, name: str) -> bytes | None:
    values = response.headers.getRawHeaders(name)
    return values[0] if values else None


def _error_body(data: bytes) -> tuple[str, str]:
    """(status, message) of an error reply in either protocol's envelope, or of whatever it is."""
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError:
        return "error", data[:200].decode("utf-8", "replace").strip() or "(no body)"
    if isinstance(body, dict):
        return str(body.get("status", "error")), str(body.get("message", ""))
    return "error", str(body)[:200]
