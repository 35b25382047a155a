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
from klein._dihttp import Response as KleinResponse
from klein._resource import StandInResource, ensure_utf8_bytes
from klein.resource import KleinResource
from twisted.internet import defer
from twisted.python import log as legacy_log
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.iweb import IRenderable, IRequest
from twisted.web.resource import IResource, getChildForRequest
from twisted.web.template import renderElement
from werkzeug.exceptions import HTTPException
from werkzeug.routing import BaseConverter, Map, MapAdapter, Rule, ValidationError

from downstream_tx.core.tokens import is_token
from downstream_tx.http.errors import ApiError, error_body, install_error_handlers, json_body
from downstream_tx.v0.hashes import Malformed, Response, is_hex64, parse_response
from downstream_tx.v1.wire import v1_error
from downstream_tx.wire import INVALID_PROOF, NONEXISTENT_TOKEN

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
    """A v0 hash response, parsed once: a :class:`~downstream_tx.v0.hashes.Response` (64 hex
    characters, given lowercase) or the :class:`~downstream_tx.v0.hashes.Malformed` marker. A
    malformed one is not refused here: the farming service answers it 400 ``invalid_response`` and
    counts it against the farmer whose token and file hash the path names."""

    def to_python(self, value: str) -> Response | Malformed:
        if not value:  # werkzeug's rule never matches an empty segment: neither does the fast table
            raise ValidationError()
        return parse_response(value)


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


#: a path segment that is one whole variable: ``<name>``, ``<conv:name>`` or ``<conv(args):name>``
_VARIABLE = re.compile(r"^<(?:(\w+)(?:\([^)]*\))?:)?(\w+)>$")


def _segments(rule: Rule) -> list[tuple[bool, str]] | None:
    """A rule's path as ``(dynamic?, static text or variable name)`` per ``/`` segment, or None
    when a segment mixes static text and a variable or has a converter that may span segments."""
    out = []
    for part in rule.rule.split("/")[1:]:
        if "<" not in part and ">" not in part:
            out.append((False, part))
            continue
        match = _VARIABLE.match(part)
        if match is None:
            return None
        converter = rule._converters.get(match.group(2))
        if converter is None or not getattr(converter, "part_isolating", True):
            return None
        out.append((True, match.group(2)))
    return out


def _may_overlap(fast: list[tuple[bool, str]], other: list[tuple[bool, str]] | None, other_rule: Rule) -> bool:
    """Whether ``other_rule`` could match a path the fast rule matches (then the fast rule is left
    to werkzeug, whose choice between them is the one that counts). Conservative: a rule that is
    not plain segments overlaps unless its leading static text differs."""
    if other is None:
        for i, part in enumerate(other_rule.rule.split("/")[1:]):
            if "<" in part or i >= len(fast):
                return True
            if not fast[i][0] and fast[i][1] != part:
                return False
        return True
    if other and other[-1] == (False, ""):  # a trailing slash (werkzeug redirects to it)
        other = other[:-1]
    if len(other) != len(fast):
        return False
    return all(a[0] or b[0] or a[1] == b[1] for a, b in zip(fast, other))


class FastMap(Map):
    """werkzeug's Map, whose adapters first try a table of the plain routes (a static prefix, then
    whole-segment variables with this module's converters): one dict lookup by (static prefix,
    segment count), the converters, the method. Whatever the table does not answer with a match —
    an unknown path, a refused parameter, a method the route does not take, any route werkzeug
    could choose differently — goes to werkzeug's own matcher, so every answer (404, 405, the
    converters' 400 bodies, redirects) is werkzeug's."""

    def __init__(self, *args: Any, fast_converters: tuple[type, ...] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: converter classes whose ``to_python`` fully checks a segment (routes with others: werkzeug)
        self.fast_converters = fast_converters
        self._fast: dict[tuple[str, ...], list[tuple[int, Rule, tuple[tuple[int, str, Any], ...]]]] = {}
        self._fast_ready = False
        self._hosts: dict[str, bool] = {}

    def fast_table(self) -> dict[tuple[str, ...], list[tuple[int, Rule, tuple[tuple[int, str, Any], ...]]]]:
        """(static prefix) → [(segment count, rule, ((segment index, name, converter), …))]."""
        if self._fast_ready:
            return self._fast
        table: dict[tuple[str, ...], list] = {}
        if not self.host_matching:
            parsed = [(rule, _segments(rule)) for rule in self._rules]
            for rule, segments in parsed:
                if not self._eligible(rule, segments):
                    continue
                assert segments is not None
                if any(other is not rule and not other.websocket and _may_overlap(segments, other_segments, other)
                       for other, other_segments in parsed):
                    continue
                prefix = []
                for dynamic, text in segments:
                    if dynamic:
                        break
                    prefix.append(text)
                variables = tuple((i, text, rule._converters[text]) for i, (dynamic, text) in enumerate(segments)
                                  if dynamic)
                table.setdefault(tuple(prefix), []).append((len(segments), rule, variables))
        self._fast, self._fast_ready = table, True
        return table

    def add(self, rulefactory: Any) -> None:
        super().add(rulefactory)
        self._fast_ready = False  # built again, with the new rule, at the next match

    def _eligible(self, rule: Rule, segments: list[tuple[bool, str]] | None) -> bool:
        if segments is None or not segments or rule.websocket or rule.build_only or rule.redirect_to is not None:
            return False
        if rule.defaults or rule.subdomain or rule.alias or len(self._rules_by_endpoint[rule.endpoint]) != 1:
            return False
        if not segments[-1][0]:  # only routes that end with a variable (no strict-slash redirects)
            return False
        return all(isinstance(rule._converters[text], self.fast_converters) for dynamic, text in segments if dynamic)

    def bind(self, server_name: str, script_name: str | None = None, subdomain: str | None = None,
             url_scheme: str = "http", default_method: str = "GET", path_info: str | None = None,
             query_args: Any = None) -> MapAdapter:
        ok = self._hosts.get(server_name)
        if ok is None:  # werkzeug refuses a host that is not IDNA (BadHost) when it binds: so does this
            ok = super().bind(server_name) is not None
            if len(self._hosts) > 1024:
                self._hosts.clear()
            self._hosts[server_name] = ok
        return FastAdapter(self, (server_name, script_name, subdomain, url_scheme, default_method, path_info,
                                  query_args))

    def werkzeug_bind(self, args: tuple) -> MapAdapter:
        return Map.bind(self, *args)


class FastAdapter:
    """What :meth:`FastMap.bind` returns: :meth:`match` tries the table, and anything else (and
    every other attribute, e.g. ``build``) is a werkzeug MapAdapter bound the same way."""

    __slots__ = ("_map", "_args", "_adapter")

    def __init__(self, map: FastMap, args: tuple):
        self._map = map
        self._args = args
        self._adapter: MapAdapter | None = None

    def _werkzeug(self) -> MapAdapter:
        if self._adapter is None:
            self._adapter = self._map.werkzeug_bind(self._args)
        return self._adapter

    def __getattr__(self, name: str) -> Any:
        return getattr(self._werkzeug(), name)

    def match(self, path_info: str | None = None, method: str | None = None, return_rule: bool = False,
              query_args: Any = None, websocket: bool | None = None) -> Any:
        if path_info is None and method is None and query_args is None and websocket is None:
            found = self.fast_match()
            if found is not None:
                rule, values = found
                return (rule, values) if return_rule else (rule.endpoint, values)
        return self._werkzeug().match(path_info, method, return_rule, query_args, websocket)

    def fast_match(self) -> tuple[Rule, dict[str, Any]] | None:
        """(rule, converted values) from the table, or None (then werkzeug decides)."""
        _, _, _, url_scheme, method, path_info, _ = self._args
        if url_scheme not in ("http", "https"):
            return None
        # werkzeug matches ``/`` + the path info without its leading slashes
        segments = (path_info or "/").lstrip("/").split("/")
        table = self._map.fast_table()
        for end in range(len(segments)):
            candidates = table.get(tuple(segments[:end]))
            if candidates is None:
                continue
            for count, rule, variables in candidates:
                if count != len(segments) or (rule.methods is not None and method.upper() not in rule.methods):
                    continue
                values = {}
                try:
                    for index, name, converter in variables:
                        values[name] = converter.to_python(segments[index])
                except Exception:  # refused (400 bodies, 404): werkzeug gives the answer
                    return None
                return rule, values
        return None


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
        self._url_map = FastMap(fast_converters=tuple(CONVERTERS.values()))
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
            path = b"/".join(list(request.prepath or []) + list(request.postpath or [])).decode("utf-8")
            host = request.getRequestHostname().decode("utf-8")
        except UnicodeDecodeError:
            return json_body(request, error_body("invalid_url", "the URL is not UTF-8 after percent-decoding"), 400)
        url_map = self._app.url_map
        if not request.prepath and isinstance(url_map, FastMap):
            port = getattr(request.getHost(), "port", 0)
            if (request.isSecure(), port) not in ((True, 443), (False, 80), (False, 0), (True, 0)):
                host = f"{host}:{port}"
            adapter = url_map.bind(host, "", path_info="/" + path if path else "",
                                   default_method=request.method.decode("utf-8"),
                                   url_scheme="https" if request.isSecure() else "http")
            found = adapter.fast_match()
            if found is not None:
                return self._serve(request, *found)
        return super().render(request)

    def _serve(self, request: IRequest, rule: Rule, values: dict[str, Any]):
        """What Klein's ``render`` does for a matched route, without its per-request Deferred chain
        (``maybeDeferred`` around the match and the handler, two ``notifyFinish`` waiters): the
        handler's result is processed and written as Klein does — at once when it is already there
        (an inline store call) — and a failure goes through the same error handlers in the same
        order. Klein's ``IKleinRequest`` component (its ``url_for``) is not set: no route uses it."""
        app = self._app
        endpoint = rule.endpoint
        count = app.endpoints[endpoint].segment_count
        request.prepath.extend(request.postpath[:count])
        request.postpath = request.postpath[count:]
        finished = [False]
        try:
            result = app.execute_endpoint(endpoint, request, **values)
        except Exception:
            result = defer.fail()

        def connection_done(outcome: Any) -> None:
            finished[0] = True
            if isinstance(outcome, Failure) and isinstance(result, defer.Deferred):
                result.cancel()  # the client went away: as Klein, cancel the handler

        request.notifyFinish().addBoth(connection_done)
        if not isinstance(result, defer.Deferred):
            self._write(request, self._process(request, result), finished)
            return server.NOT_DONE_YET
        d = result.addCallback(lambda r: self._process(request, r))
        d.addErrback(self._failed, request, finished, list(app._error_handlers))
        d.addCallback(lambda r: self._write(request, r, finished))
        d.addErrback(legacy_log.err, _why="Unhandled Error writing response")
        return server.NOT_DONE_YET

    @staticmethod
    def _process(request: IRequest, r: Any) -> Any:
        if isinstance(r, KleinResponse):
            r = r._applyToRequest(request)
        if IResource.providedBy(r):
            request.render(getChildForRequest(r, request))
            return StandInResource
        if IRenderable.providedBy(r):
            renderElement(request, r)
            return StandInResource
        return r

    def _failed(self, failure: Failure, request: IRequest, finished: list, handlers: list) -> Any:
        if finished[0]:
            if not failure.check(defer.CancelledError):
                legacy_log.err(failure, "Unhandled Error Processing Request.")
            return None
        while handlers:
            types, handler = handlers.pop(0)
            if failure.check(*types):
                d = defer.maybeDeferred(self._app.execute_error_handler, handler, request, failure)
                d.addCallback(lambda r: self._process(request, r))
                return d.addErrback(self._failed, request, finished, handlers)
        # no handler left: Klein's defaults
        return _klein_default(request, failure)

    @staticmethod
    def _write(request: IRequest, r: Any, finished: list) -> None:
        if r is StandInResource:
            return
        if isinstance(r, str):
            r = r.encode("utf-8")
        if isinstance(r, bytes):
            request.write(r)
        if not finished[0]:
            request.finish()


def _klein_default(request: IRequest, failure: Failure) -> Any:
    """Klein's answer to a failure no error handler took (the node's handlers take every exception)."""
    if failure.check(HTTPException):
        he = failure.value
        request.setResponseCode(he.code)
        resp = he.get_response({})
        for header, value in resp.headers:
            request.setHeader(ensure_utf8_bytes(header), ensure_utf8_bytes(value))
        return defer.succeed(ensure_utf8_bytes(b"".join(resp.iter_encoded())))
    request.processingFailed(failure)
    return None


def route_of(request: IRequest) -> str:
    """The matched route pattern (never the raw path, which may hold a token)."""
    return getattr(request, "_dtx_route", None) or "unmatched"


def farmer_of(request: IRequest) -> str | None:
    """The farmer id of the token in the request's path, if the route has one."""
    return getattr(request, "_dtx_farmer", None)


def mark_arrival(request: IRequest, now: float) -> None:
    """Record when the request arrived (the site calls it once its head is read, before the
    request waits for the reactor, a pool thread or the database)."""
    request._dtx_arrived = now  # type: ignore[attr-defined]


def arrived_at(request: IRequest, clock) -> float:
    """When the request arrived at the node (see :func:`mark_arrival`); ``clock``'s now for a
    request that did not come through the site (tests driving the resource directly)."""
    arrived = getattr(request, "_dtx_arrived", None)
    return clock.seconds() if arrived is None else arrived


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
        elif item.get("error") == INVALID_PROOF:
            counts["fail"] += 1
        else:
            counts["other"] += 1
    return ",".join(f"{k}:{v}" for k, v in counts.items() if v) or "empty"


#: the one app every route of the server is declared on
app = RoutedKlein()
install_error_handlers(app, route_of)
