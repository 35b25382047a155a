"""The status dashboard's routes (issue 13): ``GET /dashboard`` (overview and the farmer list:
``?sort=<status sort key>&order=asc|desc&page=<n>&limit=<n>&q=<address text>&online=1``; both pages
also take ``refresh=<seconds>``, 0 = never, default 30),
``GET /farmers/<farmer_id>`` (one farmer's standing) and ``GET /dashboard/static/<name>``.

``GET /`` is unchanged (JSON for every client, the published farmer's root probe included): the
pages live at their own paths, so no content negotiation can ever answer a JSON client with HTML.
HTML answers carry a strict Content-Security-Policy (no inline script or style, nothing from other
origins); bad query values get the usual JSON 400. With the ``dashboard`` setting off every one of
these routes is the JSON 404 of an unknown route.
"""

from __future__ import annotations

from importlib import resources

from twisted.web.iweb import IRequest

from downstream_tx.dashboard import render
from downstream_tx.dashboard.data import DEFAULT_LIMIT, MAX_LIMIT, MAX_SEARCH, SORTS, DashboardData
from downstream_tx.http.errors import ApiError, error_body
from downstream_tx.http.query import bad_query, choice_arg, int_arg, query_arg
from downstream_tx.http.routing import app

CSP = (b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       b"form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = {
    b"Content-Security-Policy": CSP,
    b"X-Content-Type-Options": b"nosniff",
    b"Referrer-Policy": b"no-referrer",
    b"X-Frame-Options": b"DENY",
}
STATIC_TYPES = {"dashboard.css": b"text/css; charset=utf-8", "refresh.js": b"text/javascript; charset=utf-8",
                "favicon.svg": b"image/svg+xml"}
#: seconds between a page's reloads (its refresh script)
REFRESH = 30


def _static_files() -> dict[str, bytes]:
    folder = resources.files("downstream_tx.dashboard").joinpath("static")
    return {name: folder.joinpath(name).read_bytes() for name in STATIC_TYPES}


#: the static files, read once
STATIC = _static_files()


def _send(request, body: bytes, content_type: bytes, cache: bytes = b"no-store") -> bytes:
    request.setResponseCode(200)
    request.setHeader(b"Content-Type", content_type)
    request.setHeader(b"Cache-Control", cache)
    for name, value in SECURITY_HEADERS.items():
        request.setHeader(name, value)
    request.setHeader(b"Content-Length", b"%d" % len(body))
    return body


def _html(request, text: str) -> bytes:
    return _send(request, text.encode("utf-8"), b"text/html; charset=utf-8")


def list_query(request) -> dict:
    """The farmer list's query parameters, validated (absent: the default; given, even empty: checked)."""
    sort = choice_arg(request, "sort", "id", tuple(SORTS))
    order = choice_arg(request, "order", "asc", ("asc", "desc"))
    search = query_arg(request, "q") or ""
    if len(search) > MAX_SEARCH:
        raise bad_query(f"q must be at most {MAX_SEARCH} characters")
    online = query_arg(request, "online") or ""
    if online not in ("", "0", "1"):
        raise bad_query("online must be 1 or 0")
    return {"sort": sort, "descending": order == "desc", "search": search, "online": online == "1",
            "page": int_arg(request, "page", 0, 0, 1_000_000),
            "limit": int_arg(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)}


def _dashboard(server) -> DashboardData:
    data = server.dashboard
    if data is None:  # the ``dashboard`` setting is off: no such route
        raise ApiError(404, error_body("not_found", "no such route"))
    return data


class DashboardRoutes:
    """Mixed into :class:`~downstream_tx.http.server.DownstreamServer` (its ``dashboard``: a
    :class:`~downstream_tx.dashboard.data.DashboardData`, or None when the setting is off)."""

    @app.route("/dashboard", methods=["GET", "HEAD"], endpoint="dashboard")
    async def dashboard_page(self, request: IRequest):
        data = _dashboard(self)
        query = list_query(request)
        refresh = int_arg(request, "refresh", REFRESH, 0, 86400)
        overview = await data.overview()
        farmers = await data.farmers(**query)
        return _html(request, render.overview_page(overview, farmers, await data.node(), refresh))

    @app.route("/farmers/<farmer_id>", methods=["GET", "HEAD"], endpoint="dashboard_farmer")
    async def dashboard_farmer(self, request: IRequest, farmer_id: str):
        data = _dashboard(self)
        refresh = int_arg(request, "refresh", REFRESH, 0, 86400)
        detail = await data.farmer(farmer_id)
        return _html(request, render.farmer_page(detail, await data.node(), refresh))

    @app.route("/dashboard/static/<name>", methods=["GET", "HEAD"], endpoint="dashboard_static")
    def dashboard_static(self, request: IRequest, name: str):
        _dashboard(self)
        body = STATIC.get(name)
        if body is None:
            raise ApiError(404, error_body("not_found", "no such file"))
        return _send(request, body, STATIC_TYPES[name], b"public, max-age=3600")
