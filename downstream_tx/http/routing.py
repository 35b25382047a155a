"""Routing: path parameters checked by converters before any handler runs and handed to the
services as typed values (a :class:`~downstream_tx.core.tokens.Token` checked and hashed once, a
:class:`~downstream_tx.v0.hashes.FileHash`, the v0 :class:`~downstream_tx.v0.hashes.Response`), the
matched route pattern recorded in each request's facts (for logs and metrics, which must never see
the raw path), and ``HEAD`` only where a route declares it.

Every route of the server is declared on :data:`app` (see ``server.py``), a Klein app. The root
resource (:class:`Router`) answers the farmers' hot routes itself from a dict table built from
the app's rules, and hands every other request to Klein's resource. Only the public APIs of Klein
(``Klein``, ``klein.resource.KleinResource``) and werkzeug (``werkzeug.routing``'s ``Map``,
``BaseConverter``, ``ValidationError`` and the public attributes of its ``Rule``) are used.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from inspect import iscoroutine
from typing import Any

from klein import Klein
from klein.resource import KleinResource
from twisted.internet import defer
from twisted.python import log as legacy_log
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource, getChildForRequest
from werkzeug.routing import BaseConverter, Map, ValidationError

from downstream_tx.core.tokens import Token, parse_token
from downstream_tx.http.errors import ApiError, error_answer, error_body, install_error_handlers, json_body
from downstream_tx.http.facts import facts_of
from downstream_tx.v0.hashes import FileHash, Malformed, Response, as_file_hash, parse_response
from downstream_tx.v1.reports import AnswerReport, ProofOutcome
from downstream_tx.v1.wire import v1_error
from downstream_tx.wire import NONEXISTENT_TOKEN

#: Base58 alphabet, 25-byte payload: bitcoin-style addresses are 26 to 35 characters
ADDRESS_RE = re.compile(r"^[1-9A-HJ-NP-Za-km-z]{26,35}$")
#: an unsigned decimal path segment (Flask's ``int`` converter)
UNSIGNED_RE = re.compile(r"^[0-9]{1,30}$")


def _refuse(status: str, message: str) -> ApiError:
    return ApiError(400, error_body(status, message))


class TokenConverter(BaseConverter):
    """A v0 token: 32 hex characters, a :class:`~downstream_tx.core.tokens.Token` (checked and
    hashed here, once), else 400 ``invalid_token``."""

    def to_python(self, value: str) -> Token:
        token = parse_token(value)
        if token is None:
            raise _refuse("invalid_token", "token must be 32 hexadecimal characters")
        return token


class HashConverter(BaseConverter):
    """A file hash: 64 hex characters, a :class:`~downstream_tx.v0.hashes.FileHash`, else 400
    ``invalid_hash``."""

    def to_python(self, value: str) -> FileHash:
        file_hash = as_file_hash(value)
        if file_hash is None:
            raise _refuse("invalid_hash", "file hash must be 64 hexadecimal characters")
        return file_hash


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

    def to_python(self, value: str) -> Token:
        token = parse_token(value)
        if token is None:
            raise v1_error(NONEXISTENT_TOKEN, self.kind)
        return token


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
_VARIABLE = re.compile(r"^<(?:(\w+)(?:\(([^)]*)\))?:)?(\w+)>$")

#: (segment index, variable name, converter) of a table route's variables
Variables = tuple[tuple[int, str, BaseConverter], ...]


@dataclass(frozen=True)
class TableRoute:
    """A route the table answers: ``handler(server, request, **values)``."""

    endpoint: str
    #: the rule as declared (``/api/downstream/chunk/<token:token>``)
    rule: str
    #: the pattern as logs show it
    pattern: str
    methods: frozenset[str] | None
    segments: int
    variables: Variables
    handler: Callable[..., Any]


#: (static prefix) → the table routes under it
Table = dict[tuple[str, ...], list[TableRoute]]


def _segments(rule_text: str, ours: bool) -> list[tuple[bool, str, str | None, str | None]] | None:
    """A rule's path as ``(dynamic?, static text or variable name, converter, its arguments)`` per
    ``/`` segment, or None when a segment mixes static text and a variable, or (``ours``) has a
    converter that is not one of this module's (werkzeug's ``path`` spans segments)."""
    out: list[tuple[bool, str, str | None, str | None]] = []
    for part in rule_text.split("/")[1:]:
        if "<" not in part and ">" not in part:
            out.append((False, part, None, None))
            continue
        match = _VARIABLE.match(part)
        if match is None:
            return None
        converter, args, name = match.groups()
        if (converter not in CONVERTERS) if ours else (converter not in (None, "default", "string", *CONVERTERS)):
            return None
        out.append((True, name, converter, args))
    return out


def _may_overlap(fast: list, other: list | None, other_text: str) -> bool:
    """Whether the rule ``other_text`` could match a path the fast rule matches (then the fast rule
    is left to werkzeug, whose choice between them is the one that counts). Conservative: a rule
    that is not plain segments overlaps unless its leading static text differs."""
    if other is None:
        for i, part in enumerate(other_text.split("/")[1:]):
            if "<" in part or i >= len(fast):
                return True
            if not fast[i][0] and fast[i][1] != part:
                return False
        return True
    if other and not other[-1][0] and other[-1][1] == "":  # a trailing slash (werkzeug redirects to it)
        other = other[:-1]
    if len(other) != len(fast):
        return False
    return all(a[0] or b[0] or a[1] == b[1] for a, b in zip(fast, other))


def _arguments(text: str | None) -> tuple[Any, ...]:
    return () if not text else tuple(int(a) for a in text.split(","))


def build_table(url_map: Map, handlers: dict[str, Callable[..., Any]], patterns: dict[str, str]) -> Table:
    """The plain routes of ``url_map`` (read through werkzeug's public ``Rule`` attributes): a static
    prefix, then whole-segment variables with this module's converters, ending with a variable, one
    rule for their endpoint, and no other rule that could match the same paths."""
    rules = [r for r in url_map.iter_rules() if not r.websocket]
    per_endpoint: dict[str, int] = {}
    for rule in rules:
        per_endpoint[rule.endpoint] = per_endpoint.get(rule.endpoint, 0) + 1
    parsed = [(rule, _segments(rule.rule, False)) for rule in rules]
    table: Table = {}
    for rule in rules:
        segments = _segments(rule.rule, True)
        if (not segments or not segments[-1][0] or rule.build_only or rule.redirect_to is not None
                or rule.defaults or rule.subdomain or rule.alias or per_endpoint[rule.endpoint] != 1
                or rule.endpoint not in handlers):
            continue
        if any(other is not rule and _may_overlap(segments, other_segments, other.rule)
               for other, other_segments in parsed):
            continue
        prefix = []
        for dynamic, text, _, _ in segments:
            if dynamic:
                break
            prefix.append(text)
        variables = tuple((i, name, CONVERTERS[converter](url_map, *_arguments(args)))
                          for i, (dynamic, name, converter, args) in enumerate(segments) if dynamic)
        methods = None if rule.methods is None else frozenset(rule.methods)
        table.setdefault(tuple(prefix), []).append(TableRoute(
            rule.endpoint, rule.rule, patterns.get(rule.endpoint, rule.endpoint), methods, len(segments), variables,
            handlers[rule.endpoint]))
    return table


def table_match(table: Table, path_info: str, method: str) -> tuple[TableRoute, dict[str, Any]] | None:
    """(route, converted values) for a path the table answers, or None (then Klein and werkzeug
    decide: an unknown path, a refused parameter, a method the route does not take)."""
    # werkzeug matches ``/`` + the path info without its leading slashes
    segments = (path_info or "/").lstrip("/").split("/")
    count = len(segments)
    for end in range(count):
        candidates = table.get(tuple(segments[:end]))
        if candidates is None:
            continue
        for route in candidates:
            if route.segments != count or (route.methods is not None and method not in route.methods):
                continue
            values = {}
            try:
                for index, name, converter in route.variables:
                    values[name] = converter.to_python(segments[index])
            except Exception:  # refused (400 bodies, 404): werkzeug gives the answer
                return None
            return route, values
    return None


class _Declared:
    """What every instance-bound copy of a :class:`RoutedKlein` shares: each endpoint's pattern as
    logs show it, its handler, and the table built from them."""

    def __init__(self) -> None:
        self.patterns: dict[str, str] = {}
        self.handlers: dict[str, Callable[..., Any]] = {}
        self.table: Table | None = None


class RoutedKlein(Klein):
    """A Klein app that records the pattern of each route (e.g. ``/api/downstream/chunk/<token>``,
    for logs and metrics) and the farmer id of a ``token`` path parameter in the request's
    :class:`~downstream_tx.http.facts.RequestFacts`.

    werkzeug answers ``HEAD`` on every ``GET`` rule; running a state-changing ``GET`` (a new
    token, a chunk contract, a challenge) for a ``HEAD`` would change state for a request that must
    be safe. So ``HEAD`` is kept only on the routes that declare it: elsewhere it is a 405 whose
    ``Allow`` lists exactly what the route accepts."""

    def __init__(self) -> None:
        super().__init__()
        self.url_map.converters.update(CONVERTERS)
        self.declared = _Declared()
        #: the object an instance-bound copy is bound to (its handlers' ``self``)
        self.bound_to: Any = None

    @property
    def patterns(self) -> dict[str, str]:
        """endpoint → its pattern as logs show it"""
        return self.declared.patterns

    def __get__(self, instance: Any, owner: object) -> Klein:
        bound = super().__get__(instance, owner)
        if bound is not self:
            bound.declared = self.declared
            bound.bound_to = instance
        return bound

    def route(self, url: str, *args: Any, **kwargs: Any):
        decorate = super().route(url, *args, **kwargs)
        declared = {m.upper() for m in kwargs.get("methods") or ("GET",)}

        def record(handler):
            result = decorate(handler)
            endpoint = kwargs.get("endpoint") or handler.__name__
            self.declared.patterns[endpoint] = _OUR_CONVERTER.sub("<", url)
            self.declared.handlers[endpoint] = handler
            self.declared.table = None  # built again, with the new rule, when next asked
            for rule in self.url_map.iter_rules(endpoint):
                if rule.methods is not None and "HEAD" not in declared:
                    rule.methods.discard("HEAD")
            return result

        return record

    def resource(self) -> Router:
        """The app's root resource (see :class:`Router`)."""
        return Router(self, self.bound_to)

    def fast_table(self) -> Table:
        """The routes :class:`Router` answers itself (see :func:`build_table`)."""
        if self.declared.table is None:
            self.declared.table = build_table(self.url_map, self.declared.handlers, self.declared.patterns)
        return self.declared.table

    def execute_endpoint(self, endpoint: str, request: IRequest, *args: Any, **kwargs: Any):
        record_route(request, self.declared.patterns.get(endpoint, endpoint), kwargs.get("token"))
        return super().execute_endpoint(endpoint, request, *args, **kwargs)


def record_route(request: IRequest, pattern: str, token: Any) -> None:
    facts = facts_of(request)
    facts.route = pattern
    if isinstance(token, Token):
        facts.farmer = token.farmer_id


class Router(Resource):
    """The node's root resource. A request for a route of the table (the farmers' hot routes) is
    matched by one dict lookup and its handler called at once, without Klein's per-request
    Deferred chain (``maybeDeferred`` around the match and the handler, two ``notifyFinish``
    waiters); a result already there (an inline store call) is written at once. Everything else —
    an unknown path, a refused parameter, a method the route does not take, every other route —
    goes to Klein's own resource, so every 404/405/400/redirect is Klein's and werkzeug's. A URL
    whose path or Host is not UTF-8 (after percent-decoding, e.g. ``/api/download/%c0%af``) gets
    the JSON 400 every other bad input gets (Klein answers it with a ``text/html`` body)."""

    isLeaf = True

    def __init__(self, app: RoutedKlein, server: Any = None):
        super().__init__()
        #: the object the handlers are methods of (None: plain functions)
        self.server = server
        self._bound = () if server is None else (server,)
        self.app = app
        self.klein = KleinResource(app)

    def render(self, request: IRequest):
        try:
            path = b"/".join(list(request.prepath or []) + list(request.postpath or [])).decode("utf-8")
            host = request.getRequestHostname().decode("utf-8")
        except UnicodeDecodeError:
            return json_body(request, error_body("invalid_url", "the URL is not UTF-8 after percent-decoding"), 400)
        # werkzeug refuses a Host that IDNA cannot encode (only a non-ASCII one may fail): its answer
        found = None
        if host.isascii():
            method = request.method.decode("ascii", "replace").upper()
            found = table_match(self.app.fast_table(), "/" + path if path else "", method)
        if found is None:
            return self.klein.render(request)
        route, values = found
        record_route(request, route.pattern, values.get("token"))
        request.prepath.extend(request.postpath)  # the whole path was matched (as Klein records it)
        request.postpath = []
        return self._serve(request, route, values)

    def _serve(self, request: IRequest, route: TableRoute, values: dict[str, Any]):
        finished = [False]
        try:
            result = route.handler(*self._bound, request, **values)
            if iscoroutine(result):
                result = defer.ensureDeferred(result)
        except Exception:
            result = defer.fail()

        def connection_done(outcome: Any) -> None:
            finished[0] = True
            if isinstance(outcome, Failure) and isinstance(result, defer.Deferred):
                result.cancel()  # the client went away: as Klein, cancel the handler

        request.notifyFinish().addBoth(connection_done)
        if not isinstance(result, defer.Deferred):
            _write(request, _process(request, result), finished)
            return server.NOT_DONE_YET
        d = result.addCallback(lambda r: _process(request, r))
        d.addErrback(self._failed, request, finished)
        d.addCallback(lambda r: _write(request, r, finished))
        d.addErrback(legacy_log.err, _why="Unhandled Error writing response")
        return server.NOT_DONE_YET

    def _failed(self, failure: Failure, request: IRequest, finished: list) -> Any:
        if finished[0]:
            if not failure.check(defer.CancelledError):
                legacy_log.err(failure, "Unhandled Error Processing Request.")
            return None
        return error_answer(self.server, request, failure)


#: what :func:`_process` returns for a result that wrote itself
_WRITTEN = object()


def _process(request: IRequest, r: Any) -> Any:
    if IResource.providedBy(r):
        request.render(getChildForRequest(r, request))
        return _WRITTEN
    return r


def _write(request: IRequest, r: Any, finished: list) -> None:
    if r is _WRITTEN:
        return
    if isinstance(r, str):
        r = r.encode("utf-8")
    if isinstance(r, bytes):
        request.write(r)
    if not finished[0]:
        request.finish()


def report_outcome(report: AnswerReport) -> str:
    """``pass:N,fail:N,other:N`` (zero counts left out) of a v1 answer report: ``fail`` is a wrong
    proof, ``other`` an item refused for another reason (expired, unknown, corrupted, repeated)."""
    counts = {"pass": 0, "fail": 0, "other": 0}
    for entry in report.entries:
        if entry.outcome is ProofOutcome.OK:
            counts["pass"] += 1
        elif entry.outcome is ProofOutcome.INVALID:
            counts["fail"] += 1
        else:
            counts["other"] += 1
    return ",".join(f"{k}:{v}" for k, v in counts.items() if v) or "empty"


#: the one app every route of the server is declared on
app = RoutedKlein()
install_error_handlers(app)
