"""The status API (docs/protocol-v1.md, "Status"): ``/api/downstream/v1/status/…``.

``/status/list[/online]/[by/[d/]<sortby>][/<limit>[/<page>]]`` lists one object per token;
``/status/show/<farmer_id>`` shows one."""

from __future__ import annotations

from twisted.web.iweb import IRequest

from downstream_tx.http.errors import json_body
from downstream_tx.http.routing import app
from downstream_tx.wire import V1_PREFIX as PREFIX

LIST = PREFIX + "/status/list"

#: every list variant of the original, each also under /online
LIST_PATTERNS = (
    "/",
    "/<int:limit>",
    "/<int:limit>/<int:page>",
    "/by/<sortby>",
    "/by/d/<sortby>",
    "/by/<sortby>/<int:limit>",
    "/by/<sortby>/<int:limit>/<int:page>",
    "/by/d/<sortby>/<int:limit>",
    "/by/d/<sortby>/<int:limit>/<int:page>",
)


def _list_route(online: bool, descending: bool):
    async def status_list(self, request: IRequest, sortby: str = "id", limit: int | None = None,
                          page: int | None = None):
        farmers = await self.status.farmers(online=online, sort=sortby, descending=descending, limit=limit,
                                            page=page)
        return json_body(request, {"farmers": farmers})

    return status_list


class StatusRoutes:
    """Mixed into :class:`~downstream_tx.http.server.DownstreamServer` (its ``status``)."""

    for _online in (False, True):
        for _n, _pattern in enumerate(LIST_PATTERNS):
            app.route(LIST + ("/online" if _online else "") + _pattern, methods=["GET"],
                      endpoint=f"status_list{'_online' if _online else ''}_{_n}")(
                _list_route(_online, "/d/" in _pattern))
    del _online, _n, _pattern

    @app.route(PREFIX + "/status/show/<farmer_id>", methods=["GET"], endpoint="status_show")
    async def status_show(self, request: IRequest, farmer_id: str):
        return json_body(request, await self.status.farmer(farmer_id))
