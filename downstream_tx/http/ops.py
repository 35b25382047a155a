"""What the node is and whether it is well: ``GET /`` (also the v1 client's root probe) and
``GET /health`` on the API listener, and the ``/metrics`` site of ``--metrics-listen``."""

from __future__ import annotations

from typing import Any

from twisted.web import resource, server
from twisted.web.iweb import IRequest

from downstream_tx.http.errors import json_body
from downstream_tx.http.routing import app
from downstream_tx.version import full_version
from downstream_tx.wire import PROTOCOLS


class OpsRoutes:
    """Mixed into :class:`~downstream_tx.http.server.DownstreamServer` (its ``ping``, ``config``
    and ``leadership``)."""

    @app.route("/", methods=["GET", "HEAD"], endpoint="index")
    def index(self, request: IRequest):
        return json_body(request, {"name": "downstream-tx", "version": full_version(), "protocols": list(PROTOCOLS)})

    @app.route("/health", methods=["GET", "HEAD"], endpoint="health")
    async def health(self, request: IRequest):
        """200 when the database answers ``SELECT 1`` within ``health_timeout`` seconds, else 503;
        with the instance's ``role`` (leader: it runs the periodic jobs; follower) and the jobs
        lease as it last saw it."""
        ping = await self.ping(self.config.health_timeout)
        body = {"status": "ok" if ping.ok else "unavailable", "version": full_version(),
                "database": ping.detail, "database_ms": round(ping.seconds * 1000, 1)}
        if self.leadership is not None:
            body.update(self.leadership())
        if not ping.ok:
            request.setHeader(b"Retry-After", b"5")
        return json_body(request, body, 200 if ping.ok else 503)


class MetricsResource(resource.Resource):
    """``GET /metrics``: the Prometheus text exposition of ``metrics``; everything else 404."""

    isLeaf = True

    def __init__(self, metrics: Any):
        super().__init__()
        self.metrics = metrics

    def render_GET(self, request) -> bytes:
        if request.path != b"/metrics":
            request.setResponseCode(404)
            request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
            return b"not found: try /metrics\n"
        request.setHeader(b"Content-Type", self.metrics.content_type.encode())
        return self.metrics.render()

    render_HEAD = render_GET


class QuietSite(server.Site):
    """A site without an access log (Site logs every request by default)."""

    noisy = False

    def log(self, request) -> None:
        pass


def metrics_site(metrics: Any) -> server.Site:
    return QuietSite(MetricsResource(metrics))
