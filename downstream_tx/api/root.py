"""``GET /``: what this server is (also the v1 client's root probe)."""

from __future__ import annotations

from downstream_tx import __version__
from downstream_tx.api.common import Context, json_body

PROTOCOLS = ["v0", "v1"]


def register(app, ctx: Context) -> None:
    @app.route("/", methods=["GET", "HEAD"])
    def index(request):
        return json_body(request, {"name": "downstream-tx", "version": __version__, "protocols": PROTOCOLS})
