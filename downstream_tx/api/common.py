"""What every route shares: the one error type, JSON rendering, client addresses."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

import orjson
from twisted.logger import Logger
from twisted.web.iweb import IRequest
from werkzeug.exceptions import MethodNotAllowed, NotFound

from downstream_tx.config import Config
from downstream_tx.db.database import DatabaseUnavailable
from downstream_tx.errors import NodeError
from downstream_tx.node import Node

log = Logger()

HTTP_STATUS = {"invalid": 400, "not_found": 404, "forbidden": 403, "limit": 429, "conflict": 409,
               "unavailable": 503}


class ApiError(Exception):
    """An HTTP status and the JSON body to send with it."""

    def __init__(self, code: int, body: dict[str, Any]):
        super().__init__(code, body)
        self.code = code
        self.body = body


@dataclass
class Context:
    node: Node
    config: Config
    stats: Any = None
    extras: dict[str, Any] = field(default_factory=dict)


def json_body(request: IRequest, obj: Any, code: int = 200) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", b"application/json")
    request.setHeader(b"Cache-Control", b"no-store")
    body = orjson.dumps(obj)
    request.setHeader(b"Content-Length", b"%d" % len(body))
    return body


def error_body(status: str, message: str) -> dict[str, str]:
    return {"status": status, "message": message}


def node_error(e: NodeError) -> ApiError:
    return ApiError(HTTP_STATUS.get(e.kind, 400), error_body(e.status, e.message))


def register_error_handlers(app, ctx: Context) -> None:
    @app.handle_errors(ApiError)
    def api_error(request, failure):
        return json_body(request, failure.value.body, failure.value.code)

    @app.handle_errors(NodeError)
    def on_node_error(request, failure):
        e = node_error(failure.value)
        return json_body(request, e.body, e.code)

    @app.handle_errors(NotFound)
    def not_found(request, failure):
        return json_body(request, error_body("not_found", "no such route"), 404)

    @app.handle_errors(MethodNotAllowed)
    def not_allowed(request, failure):
        allowed = getattr(failure.value, "valid_methods", None) or []
        if allowed:
            request.setHeader(b"Allow", ", ".join(allowed).encode())
        return json_body(request, error_body("method_not_allowed", "method not allowed on this route"), 405)

    @app.handle_errors(DatabaseUnavailable)
    def unavailable(request, failure):
        log.warn("database unavailable during {method} {route}", method=request.method.decode(),
                 route=route_of(request))
        request.setHeader(b"Retry-After", b"5")
        return json_body(request, error_body("unavailable", "the database is unavailable, try again soon"), 503)

    @app.handle_errors(Exception)
    def unexpected(request, failure):
        log.failure("unexpected error in {method} {route}", failure, method=request.method.decode(),
                    route=route_of(request))
        return json_body(request, error_body("error", "Internal Server Error"), 500)


def route_of(request: IRequest) -> str:
    """The matched route pattern (never the raw path, which may hold a token)."""
    return getattr(request, "_dtx_route", None) or "unmatched"


def client_ip(request: IRequest, config: Config) -> str:
    """The client's address: the peer, or the last untrusted X-Forwarded-For hop when the peer is
    a configured trusted proxy."""
    peer = getattr(request.getClientAddress(), "host", None) or ""
    if not config.trusted_proxies or not _in(peer, config.trusted_proxies):
        return peer
    header = request.getHeader(b"x-forwarded-for")
    if not header:
        return peer
    hops = [h.strip() for h in header.split(",") if h.strip()]
    for hop in reversed(hops):
        if not _in(hop, config.trusted_proxies):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return peer
    return hops[0] if hops else peer


def _in(ip: str, networks) -> bool:
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(address in net for net in networks)
