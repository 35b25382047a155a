"""Status API (spec protocol-v1 §4.1-§4.2, with Part A's fixes): ``/api/downstream/v1/status/…``.

``/status/list[/online]/[by/[d/]<sortby>][/<limit>[/<page>]]`` lists one object per token;
``/status/show/<farmer_id>`` shows one. Uptime comes from the uptime timer's summary.
"""

from __future__ import annotations

from downstream_tx.api.common import Context, json_body
from downstream_tx.api.v1 import PREFIX

LIST = PREFIX + "/status/list"

#: every list variant of the original (§4.1), each also under /online
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


def register(app, ctx: Context) -> None:
    node = ctx.node

    def add_list(online: bool, n: int, pattern: str) -> None:
        url = LIST + ("/online" if online else "") + pattern
        endpoint = f"status_list{'_online' if online else ''}_{n}"
        descending = "/d/" in pattern

        @app.route(url, methods=["GET"], endpoint=endpoint)
        async def status_list(request, sortby="id", limit=None, page=None):
            farmers = await node.v1.farmers(online=online, sort=sortby, descending=descending, limit=limit,
                                            page=page)
            return json_body(request, {"farmers": farmers})

    for online in (False, True):
        for n, pattern in enumerate(LIST_PATTERNS):
            add_list(online, n, pattern)

    @app.route(PREFIX + "/status/show/<farmer_id>", methods=["GET"], endpoint="status_show")
    async def status_show(request, farmer_id):
        return json_body(request, await node.v1.farmer(farmer_id))
