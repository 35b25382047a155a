"""What every route shares: the one error type, JSON rendering, client addresses."""

from __future__ import annotations

import hashlib
import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

import orjson
from klein import Klein
from klein.resource import KleinResource
from twisted.logger import Logger
from twisted.web.iweb import IRequest
from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.routing import RequestRedirect

from downstream_tx.api.ratelimit import RateLimiter, retry_after
from downstream_tx.config import Config
from downstream_tx.db.database import DatabaseUnavailable
from downstream_tx.errors import NodeError
from downstream_tx.node import Node

log = Logger()

HTTP_STATUS = {"invalid": 400, "not_found": 404, "forbidden": 403, "limit": 429, "conflict": 409,
               "unavailable": 503}


class ApiError(Exception):
    """An HTTP status and the JSON body to send with it."""

    def __init__(self, code: int, body: dict[str, Any], headers: dict[bytes, bytes] | None = None):
        super().__init__(code, body)
        self.code = code
        self.body = body
        self.headers = headers or {}


@dataclass
class Context:
    node: Node
    config: Config
    stats: Any = None
    extras: dict[str, Any] = field(default_factory=dict)
    #: token creation per client address (v0 and v1 /new share it)
    token_limiter: RateLimiter | None = None

    def __post_init__(self) -> None:
        if self.token_limiter is None:
            self.token_limiter = RateLimiter(self.config.token_rate, self.node.clock)


def limit_token_requests(ctx: Context, ip: str, body: dict[str, Any]) -> None:
    """Count a token request of ``ip``; over ``token_rate`` per minute, a 429 with ``body`` and
    ``Retry-After``. ``{retry}`` in the body's message is replaced by the seconds to wait."""
    limiter = ctx.token_limiter
    wait = limiter.check(ip) if limiter is not None else 0.0
    if wait > 0:
        seconds = retry_after(wait)
        body = {k: v.replace("{retry}", str(seconds)) if isinstance(v, str) else v for k, v in body.items()}
        log.info("token requests over the rate limit from a client ({ip_hash})", ip_hash=ctx.node.hash_ip(ip))
        raise ApiError(429, body, {b"Retry-After": str(seconds).encode()})


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
        for name, value in failure.value.headers.items():
            request.setHeader(name, value)
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

    @app.handle_errors(RequestRedirect)
    def redirect(request, failure):
        # werkzeug's strict slashes (e.g. /status/list → /status/list/); without this handler the
        # catch-all below turned every such redirect into a 500
        request.setHeader(b"Location", failure.value.new_url.encode())
        return json_body(request, {"status": "redirect", "location": failure.value.new_url}, failure.value.code)

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


_TOKEN = re.compile(r"^[0-9a-fA-F]{32}$")


class JsonKleinResource(KleinResource):
    """Klein's resource, but a URL whose path or Host is not UTF-8 (after percent-decoding, e.g.
    ``/api/download/%c0%af``) gets the JSON 400 every other bad input gets; Klein answered it with
    a ``text/html`` body and logged a traceback."""

    def render(self, request: IRequest):
        try:
            b"/".join(list(request.prepath or []) + list(request.postpath or [])).decode("utf-8")
            request.getRequestHostname().decode("utf-8")
        except UnicodeDecodeError:
            return json_body(request, error_body("invalid_url", "the URL is not UTF-8 after percent-decoding"), 400)
        return super().render(request)


class RoutedKlein(Klein):
    """A Klein app that records, on each request it routes, the matched route pattern
    (``request._dtx_route``, e.g. ``/api/downstream/chunk/<token>``) and the farmer id of a
    ``token`` path parameter (``request._dtx_farmer``), for the request log and metrics, which must
    never see the raw path.

    It also answers ``HEAD`` only on routes that declare it: werkzeug adds ``HEAD`` to every ``GET``
    rule, and running a state-changing ``GET`` (a new token, a chunk contract, a challenge) for a
    ``HEAD`` would change state for a request that must be safe. Such a ``HEAD`` is a 405."""

    _rules: dict[str, str] | None = None

    def __init__(self) -> None:
        super().__init__()
        #: endpoint → the methods its route declared (``url_map`` also holds werkzeug's implicit HEAD)
        self.declared_methods: dict[str, tuple[str, ...]] = {}

    def route(self, url: str, *args: Any, **kwargs: Any):
        decorate = super().route(url, *args, **kwargs)
        methods = tuple(m.upper() for m in kwargs.get("methods") or ("GET",))

        def record(handler):
            endpoint = kwargs.get("endpoint") or handler.__name__
            self.declared_methods[endpoint] = methods
            return decorate(handler)

        return record

    def resource(self) -> KleinResource:
        return JsonKleinResource(self)

    def execute_endpoint(self, endpoint: str, request: IRequest, *args: Any, **kwargs: Any):
        rules = self._rules
        if rules is None or endpoint not in rules:
            rules = self._rules = {rule.endpoint: rule.rule for rule in self.url_map.iter_rules()}
        request._dtx_route = rules.get(endpoint, endpoint)
        declared = self.declared_methods.get(endpoint)
        if request.method == b"HEAD" and declared is not None and "HEAD" not in declared:
            raise MethodNotAllowed(valid_methods=list(declared))
        token = kwargs.get("token")
        if isinstance(token, str) and _TOKEN.match(token):
            request._dtx_farmer = hashlib.sha256(bytes.fromhex(token)).hexdigest()[:20]
        return super().execute_endpoint(endpoint, request, *args, **kwargs)


def route_of(request: IRequest) -> str:
    """The matched route pattern (never the raw path, which may hold a token)."""
    return getattr(request, "_dtx_route", None) or "unmatched"


def farmer_of(request: IRequest) -> str | None:
    """The farmer id of the token in the request's path, if the route has one."""
    return getattr(request, "_dtx_farmer", None)


def client_ip(request: IRequest, config: Config) -> str:
    """The client's address: the peer, or the last untrusted X-Forwarded-For hop when the peer is
    a configured trusted proxy."""
    peer = getattr(request.getClientAddress(), "host", None) or ""
    if not config.trusted_proxies or not _in(peer, config.trusted_proxies):
        return peer
    raw = request.getHeader(b"x-forwarded-for")
    if not raw:
        return peer
    # getHeader with a bytes name returns bytes (splitting it with a str raised TypeError → 500)
    header = raw.decode("latin-1") if isinstance(raw, bytes) else raw
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
