"""The one HTTP error type, JSON rendering, and the handlers every route shares."""

from __future__ import annotations

import errno
from typing import Any
from urllib.parse import urlsplit

import orjson
from klein import Klein
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.routing import RequestRedirect

from downstream_tx.db.database import DatabaseUnavailable
from downstream_tx.errors import NodeError
from downstream_tx.http.facts import route_of

log = Logger()

#: the HTTP status of each kind of node error
HTTP_STATUS = {"invalid": 400, "not_found": 404, "forbidden": 403, "limit": 429, "conflict": 409,
               "refused": 409, "unavailable": 503}


class ApiError(Exception):
    """An HTTP status and the JSON body to send with it."""

    def __init__(self, code: int, body: dict[str, Any], headers: dict[bytes, bytes] | None = None):
        super().__init__(code, body)
        self.code = code
        self.body = body
        self.headers = headers or {}


#: errors a client is told about as they are (nothing to log)
EXPECTED = (ApiError, NodeError, NotFound, MethodNotAllowed, RequestRedirect)


def error_body(status: str, message: str) -> dict[str, str]:
    return {"status": status, "message": message}


#: what a request that needed a file descriptor gets when the process has none left (every
#: connection holds one: it passes once some close)
OUT_OF_DESCRIPTORS = ApiError(503, error_body("unavailable", "the node is out of file descriptors, try again soon"),
                              {b"Retry-After": b"5"})


def out_of_descriptors(e: BaseException) -> bool:
    """Whether ``e`` is the process (EMFILE) or the system (ENFILE) being out of file descriptors."""
    return isinstance(e, OSError) and e.errno in (errno.EMFILE, errno.ENFILE)


def json_body(request: IRequest, obj: Any, code: int = 200) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", b"application/json")
    request.setHeader(b"Cache-Control", b"no-store")
    body = orjson.dumps(obj)
    request.setHeader(b"Content-Length", b"%d" % len(body))
    return body


def redirect_location(new_url: str, public_url: str | None) -> str:
    """Where a redirect werkzeug built points: its path and query under the node's ``public_url``,
    or relative (``/api/…``) without one — never under the request's ``Host`` header, which is the
    client's to choose (a redirect to it sends the next request wherever that client said)."""
    parts = urlsplit(new_url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return public_url.rstrip("/") + target if public_url else target


def as_api_error(e: Exception, public_url: str | None = None) -> ApiError:
    """The HTTP form of an error a route let through (a NodeError's kind decides its status);
    redirects point under ``public_url`` (see :func:`redirect_location`)."""
    if isinstance(e, ApiError):
        return e
    if isinstance(e, NodeError):
        return ApiError(HTTP_STATUS.get(e.kind, 400), error_body(e.status, e.message))
    if isinstance(e, NotFound):
        return ApiError(404, error_body("not_found", "no such route"))
    if isinstance(e, MethodNotAllowed):
        allowed = getattr(e, "valid_methods", None) or []
        headers = {b"Allow": ", ".join(sorted(allowed)).encode()} if allowed else {}
        return ApiError(405, error_body("method_not_allowed", "method not allowed on this route"), headers)
    if isinstance(e, RequestRedirect):
        # werkzeug's strict slashes (e.g. /status/list → /status/list/)
        location = redirect_location(e.new_url, public_url)
        return ApiError(e.code, {"status": "redirect", "location": location}, {b"Location": location.encode()})
    if isinstance(e, DatabaseUnavailable):
        return ApiError(503, error_body("unavailable", "the database is unavailable, try again soon"),
                        {b"Retry-After": b"5"})
    if out_of_descriptors(e):
        return OUT_OF_DESCRIPTORS
    return ApiError(500, error_body("error", "Internal Server Error"))


def render_error(request: IRequest, e: Exception, public_url: str | None = None) -> bytes:
    """The one place an error becomes a response."""
    api = as_api_error(e, public_url)
    for name, value in api.headers.items():
        request.setHeader(name, value)
    return json_body(request, api.body, api.code)


def error_answer(server: Any, request: IRequest, failure: Failure) -> bytes:
    """The answer to an error a route let through (:func:`render_error`); what a client cannot be
    told is logged (the database unavailable, an unexpected error with its traceback)."""
    e = failure.value
    if isinstance(e, DatabaseUnavailable):
        log.warn("database unavailable during {method} {route}", method=request.method.decode(),
                 route=route_of(request))
    elif not isinstance(e, EXPECTED):
        log.failure("unexpected error in {method} {route}", failure, method=request.method.decode(),
                    route=route_of(request))
    return render_error(request, e, getattr(getattr(server, "config", None), "public_url", None))


def install_error_handlers(app: Klein) -> None:
    """Every error of a route Klein serves goes to :func:`error_answer`."""
    app.handle_errors(Exception)(error_answer)
