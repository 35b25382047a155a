"""Routing: path parameters checked by converters before any handler runs, the matched route
pattern recorded on each request (for logs and metrics, which must never see the raw path), and
``HEAD`` only where a route declares it.

Every route of the server is declared on :data:`app` (see ``server.py``).
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from klein import Klein
from klein.resource import KleinResource
from twisted.web.iweb import IRequest
from werkzeug.routing import BaseConverter, Map, ValidationError

from downstream_tx.core.tokens import is_token
from downstream_tx.http.errors import ApiError, error_body, install_error_handlers, json_body
from downstream_tx.v0.hashes import is_hex64
from downstream_tx.v1.wire import NONEXISTENT_TOKEN, v1_error

#: Base58 alphabet, 25-byte payload: bitcoin-style addresses are 26 to 35 characters
ADDRESS_RE = re.compile(r"^[1-9A-HJ-NP-Za-km-z]{26,35}$")
#: an unsigned decimal path segment (Flask's ``int`` converter)
UNSIGNED_RE = re.compile(r"^[0-9]{1,30}$")


def _refuse(status: str, message: str) -> ApiError:
    return ApiError(400, error_body(status, message))


class TokenConverter(BaseConverter):
    """A v0 token: 32 hex characters (given lowercase), else 400 ``invalid_token``."""

    def to_python(self, value: str) -> str:
        if not is_token(value):
            raise _refuse("invalid_token", "token must be 32 hexadecimal characters")
        return value.lower()


class HashConverter(BaseConverter):
    """A file hash: 64 hex characters (given lowercase), else 400 ``invalid_hash``."""

    def to_python(self, value: str) -> str:
        if not is_hex64(value):
            raise _refuse("invalid_hash", "file hash must be 64 hexadecimal characters")
        return value.lower()


class ResponseConverter(BaseConverter):
    """A v0 hash response: 64 hex characters, else 400 ``invalid_response``."""

    def to_python(self, value: str) -> str:
        if not is_hex64(value):
            raise _refuse("invalid_response", "hash response must be 64 hexadecimal characters")
        return value.lower()


def check_address(value: str) -> str:
    """Looks like an address (its checksum is checked by the token rules), else 400
    ``invalid_address``. Not a converter: ``/new`` counts a request against the client's rate
    limit before it looks at the address."""
    if not ADDRESS_RE.fullmatch(value):  # (``$`` alone also matches before a final newline)
        raise _refuse("invalid_address", "address must be 26 to 35 Base58 characters")
    return value


class V1TokenConverter(BaseConverter):
    """A v1 token. Anything else is a nonexistent token: ``{"status": "error", "message":
    "Nonexistent token."}`` with the route's status (``<v1token(404):token>``; 400 by default)."""

    def __init__(self, map: Map, status: int = 400):
        super().__init__(map)
        self.kind = "not_found" if status == 404 else "invalid"

    def to_python(self, value: str) -> str:
        if not is_token(value):
            raise v1_error(NONEXISTENT_TOKEN, self.kind)
        return value


class UnsignedConverter(BaseConverter):
    """An unsigned decimal id; anything else does not match the route (404), as Flask's ``int``."""

    def to_python(self, value: str) -> int:
        if not UNSIGNED_RE.fullmatch(value):
            raise ValidationError()
        return int(value)


CONVERTERS = {"token": TokenConverter, "hash": HashConverter, "response": ResponseConverter,
              "v1token": V1TokenConverter, "unsigned": UnsignedConverter}
#: ``<token:token>`` → ``<token>`` in recorded patterns (werkzeug's own ``int`` stays as written)
_OUR_CONVERTER = re.compile(r"<(?:{})(?:\([^)]*\))?:".format("|".join(CONVERTERS)))


class RoutedKlein(Klein):
    """A Klein app that records, on each request it routes, the matched route pattern
    (``request._dtx_route``, e.g. ``/api/downstream/chunk/<token>``) and the farmer id of a
    ``token`` path parameter (``request._dtx_farmer``).

    werkzeug answers ``HEAD`` on every ``GET`` rule; running a state-changing ``GET`` (a new
    token, a chunk contract, a challenge) for a ``HEAD`` would change state for a request that must
    be safe. So ``HEAD`` is kept only on the routes that declare it: elsewhere it is a 405 whose
    ``Allow`` lists exactly what the route accepts."""

    def __init__(self) -> None:
        super().__init__()
        self.url_map.converters.update(CONVERTERS)
        #: endpoint → its pattern as logs show it; shared by every instance-bound copy
        self.patterns: dict[str, str] = {}

    def __get__(self, instance: Any, owner: object) -> Klein:
        bound = super().__get__(instance, owner)
        if bound is not self:
            bound.patterns = self.patterns
        return bound

    def route(self, url: str, *args: Any, **kwargs: Any):
        decorate = super().route(url, *args, **kwargs)
        declared = {m.upper() for m in kwargs.get("methods") or ("GET",)}

        def record(handler):
            result = decorate(handler)
            endpoint = kwargs.get("endpoint") or handler.__name__
            self.patterns[endpoint] = _OUR_CONVERTER.sub("<", url)
            for rule in self.url_map.iter_rules(endpoint):
                if rule.methods is not None and "HEAD" not in declared:
                    rule.methods.discard("HEAD")
            return result

        return record

    def resource(self) -> KleinResource:
        return JsonKleinResource(self)

    def execute_endpoint(self, endpoint: str, request: IRequest, *args: Any, **kwargs: Any):
        request._dtx_route = self.patterns.get(endpoint, endpoint)
        token = kwargs.get("token")
        if isinstance(token, str):
            request._dtx_farmer = hashlib.sha256(bytes.fromhex(token)).hexdigest()[:20]
        return super().execute_endpoint(endpoint, request, *args, **kwargs)


class JsonKleinResource(KleinResource):
    """Klein's resource, but a URL whose path or Host is not UTF-8 (after percent-decoding, e.g.
    ``/api/download/%c0%af``) gets the JSON 400 every other bad input gets (Klein answers it with
    a ``text/html`` body and logs a traceback)."""

    def render(self, request: IRequest):
        try:
            b"/".join(list(request.prepath or []) + list(request.postpath or [])).decode("utf-8")
            request.getRequestHostname().decode("utf-8")
        except UnicodeDecodeError:
            return json_body(request, error_body("invalid_url", "the URL is not UTF-8 after percent-decoding"), 400)
        return super().render(request)


def route_of(request: IRequest) -> str:
    """The matched route pattern (never the raw path, which may hold a token)."""
    return getattr(request, "_dtx_route", None) or "unmatched"


def farmer_of(request: IRequest) -> str | None:
    """The farmer id of the token in the request's path, if the route has one."""
    return getattr(request, "_dtx_farmer", None)


def set_outcome(request: IRequest, outcome: str) -> None:
    """Record what an answer route decided (``pass``, ``fail``, ``pass:3,fail:1``) for the request
    log line, which otherwise shows only the HTTP status (200 for a pass and a fail alike)."""
    request._dtx_outcome = outcome  # type: ignore[attr-defined]


def outcome_of(request: IRequest) -> str | None:
    return getattr(request, "_dtx_outcome", None)


def report_outcome(report: list[dict[str, Any]]) -> str:
    """``pass:N,fail:N,other:N`` (zero counts left out) of a v1 answer report: ``fail`` is a wrong
    proof, ``other`` an item refused for another reason (expired, unknown, corrupted, repeated)."""
    counts = {"pass": 0, "fail": 0, "other": 0}
    for item in report:
        if item.get("status") == "ok":
            counts["pass"] += 1
        elif item.get("error") == "Invalid proof":
            counts["fail"] += 1
        else:
            counts["other"] += 1
    return ",".join(f"{k}:{v}" for k, v in counts.items() if v) or "empty"


#: the one app every route of the server is declared on
app = RoutedKlein()
install_error_handlers(app, route_of)
