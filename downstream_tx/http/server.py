"""The node's HTTP API as one Klein server object: the routes of each protocol (``v0.py``,
``v1.py``, ``status.py``, ``ops.py``, ``dashboard.py``) over the services they call, all given to it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.web.resource import Resource

from downstream_tx.config import Config
from downstream_tx.core.context import Blocking
from downstream_tx.dashboard.data import DashboardData
from downstream_tx.http.bodies import BodyReader
from downstream_tx.http.clients import TokenRequestLimit
from downstream_tx.http.dashboard import DashboardRoutes
from downstream_tx.http.errors import error_body, json_body
from downstream_tx.http.ops import OpsRoutes
from downstream_tx.http.ratelimit import RateLimiter, SharedRateLimiter
from downstream_tx.http.routing import Router, app
from downstream_tx.http.site import DownstreamSite
from downstream_tx.http.status import StatusRoutes
from downstream_tx.http.v0 import V0Routes
from downstream_tx.http.v1 import BATCH_PATHS, V1Routes
from downstream_tx.v0.farming import V0Farming
from downstream_tx.v1.farming import V1Farming
from downstream_tx.v1.status import Status


class DownstreamServer(OpsRoutes, V0Routes, V1Routes, StatusRoutes, DashboardRoutes):
    _app = app

    def __init__(self, config: Config, clock: Any, v0: V0Farming, v1: V1Farming, status: Status,
                 ping: Callable[[float], defer.Deferred], hash_ip: Callable[[str | None], str | None],
                 blocking: Blocking, limiter: RateLimiter | SharedRateLimiter, dashboard: DashboardData | None = None,
                 leadership: Callable[[], dict[str, Any]] | None = None, base_url: str | None = None):
        self.config = config
        self.clock = clock
        self.v0 = v0
        self.v1 = v1
        self.status = status
        #: the status dashboard's data (None: the ``dashboard`` setting is off, its routes are 404)
        self.dashboard = dashboard
        #: ``ping(timeout)`` fires with a :class:`~downstream_tx.health.Ping`
        self.ping = ping
        self.max_body_size = config.max_body_size
        self.batch_body_size = max(config.max_batch_body_size, config.max_body_size)
        #: reads bodies whose cost grows with their size (large ones on ``blocking``'s worker threads)
        self.bodies = BodyReader(blocking, config.max_inflate_ratio)
        #: token requests per client address (the node's limiter keeps its buckets in the database:
        #: the limit holds across every instance sharing it)
        self.token_limit = TokenRequestLimit(limiter, hash_ip)
        #: the instance's role and the jobs lease as it last saw it (``/health``; None: not shown)
        self.leadership = leadership
        #: where farmers download stored chunks (the daemon: its bound address unless ``public_url``)
        self.base_url = (base_url or config.base_url).rstrip("/")

    def resource(self) -> Router:
        """The root resource: the hot farmer routes answered by the router's table, the rest by
        Klein (http/routing.py)."""
        return self._app.resource()

    def site(self, reactor: Any) -> DownstreamSite:
        """The HTTP site serving this server: body caps (batch routes have their own), timeouts."""
        return self.serve(open_site(self.config, reactor))

    def serve(self, site: DownstreamSite) -> DownstreamSite:
        """Serve this server's routes on a site made by :func:`open_site` (until now: 503)."""
        site.resource = self.resource()
        return site


def open_site(config: Config, reactor: Any, metrics: Any = None) -> DownstreamSite:
    """The HTTP site before the node is open, so that its listeners can be bound first (a port in
    use fails before the database is touched): body caps (batch routes have their own), timeouts;
    it answers 503 until :meth:`DownstreamServer.serve` gives it the routes. ``metrics``: told of
    every request and every connection closed for a limit."""
    observers = () if metrics is None else (metrics.observe_request,)
    connection_observers = () if metrics is None else (metrics.count_connection_closed,)
    return DownstreamSite(_Starting(), observers=observers, connection_observers=connection_observers,
                          max_body_size=config.max_body_size,
                          timeout=config.idle_timeout, request_timeout=config.request_timeout,
                          batch_body_size=max(config.max_batch_body_size, config.max_body_size),
                          batch_paths=tuple(p.encode() for p in BATCH_PATHS), max_pipelined=config.max_pipelined,
                          max_connections_per_client=config.max_connections_per_client,
                          trusted_proxies=config.trusted_proxies, reactor=reactor,
                          # no route reads form fields: twisted.web would parse a form body (up to
                          # the cap) on the reactor thread before any route or token check (a 1 MiB
                          # ``a&a&…`` took 2 s)
                          parsePOSTFormSubmission=False)


class _Starting(Resource):
    """What a site answers before the node is open (its listeners are paused meanwhile)."""

    isLeaf = True

    def render(self, request: Any) -> bytes:
        request.setHeader(b"Retry-After", b"5")
        return json_body(request, error_body("unavailable", "the node is starting, try again soon"), 503)
