"""Protocol v1 routes under ``/api/downstream/v1`` (the ``downstream-farmer`` 0.1.8 client).

Shapes, statuses and messages follow spec protocol-v1 Part B §2 exactly; errors are the original
envelope ``{"status": "error", "message": ...}``. Each request is one node call, one transaction.
"""

from __future__ import annotations

import re
import zlib
from typing import Any

import ijson
import orjson
from werkzeug.exceptions import NotFound

from downstream_tx.api.common import Context, client_ip, json_body, limit_token_requests
from downstream_tx.farming_v1 import DEFAULT_CHUNK_SIZE, MAX_ITEMS, MSG_POST_JSON, MSG_POST_REQUIRED, v1_error

PREFIX = "/api/downstream/v1"
_UNSIGNED = re.compile(r"^[0-9]{1,30}$")


def unsigned(text: str) -> int:
    """A path segment like Flask's ``int`` converter: unsigned decimal, else the route 404s."""
    if not _UNSIGNED.match(text):
        raise NotFound()
    return int(text)


def read_body(request: Any, limit: int) -> bytes:
    return request.content.read(limit + 1)[:limit] if request.content is not None else b""


def plain_body(request: Any, raw: bytes, limit: int) -> bytes:
    """The client sends ``Content-Encoding: gzip`` on /answer with a plain JSON body: the header is
    ignored unless the body really is gzip (then it is inflated, within ``limit``)."""
    if raw[:2] == b"\x1f\x8b":
        try:
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            data = inflater.decompress(raw, limit + 1)
            if len(data) <= limit and inflater.eof:
                return data
        except zlib.error:
            pass
    return raw


#: nesting levels the fallback parser follows; deeper input ends the list like a parse error
#: (ijson's ``items`` keeps a prefix per level, so its memory grows with the square of the depth:
#: a 200 KB body of nested brackets took gigabytes)
MAX_STREAM_DEPTH = 64


def stream_items(raw: bytes, key: str) -> list[Any]:
    """The items of ``body[key]`` as the original's streaming parser (ijson) saw them: valid JSON
    gives the list (or nothing); invalid JSON gives the items before the first error."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return _items_before_error(raw, key)
    if isinstance(obj, dict) and isinstance(obj.get(key), list):
        return obj[key]
    return []


def _items_before_error(raw: bytes, key: str) -> list[Any]:
    """What ``ijson.items(raw, key + ".item")`` yields before the first parse error, built from
    ijson's prefix-free events with a bounded nesting depth and at most ``MAX_ITEMS`` items."""
    items: list[Any] = []
    depth = 0  # containers open
    top_is_map = False
    current_key: str | None = None
    collecting = False  # inside a top-level ``key`` array (depth 2)
    builder: ijson.common.ObjectBuilder | None = None
    try:
        for event, value in ijson.basic_parse(raw):
            opens, closes = event in ("start_map", "start_array"), event in ("end_map", "end_array")
            if opens:
                depth += 1
                if depth > MAX_STREAM_DEPTH:
                    break
                if depth == 1:
                    top_is_map = event == "start_map"
            if builder is not None:
                builder.event(event, value)
                if closes and depth == 3:
                    items.append(builder.value)
                    builder = None
            elif collecting:
                if opens:
                    builder = ijson.common.ObjectBuilder()
                    builder.event(event, value)
                elif closes:
                    collecting = False
                else:
                    items.append(value)
            elif depth == 1 and top_is_map and event == "map_key":
                current_key = value
            elif depth == 2 and event == "start_array" and top_is_map and current_key == key:
                collecting = True
            if closes:
                depth -= 1
            if len(items) >= MAX_ITEMS:
                break
    except Exception:  # any parse error silently ends the list, as in the original
        pass
    return items


def parse_object(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


def is_json(request: Any) -> bool:
    """Flask 0.10's ``request.is_json``: only then does ``get_json`` parse the body."""
    value = (request.getHeader(b"content-type") or b"").decode("latin-1").split(";")[0].strip().lower()
    return value == "application/json" or (value.startswith("application/") and value.endswith("+json"))


def register(app, ctx: Context) -> None:
    node = ctx.node
    config = ctx.config
    cap = config.max_body_size

    @app.route(PREFIX + "/", methods=["GET"], endpoint="v1_index")
    def v1_index(request):
        return json_body(request, {"msg": "ok"})

    @app.route(PREFIX + "/new/<address>", methods=["GET", "POST"], endpoint="v1_new")
    async def v1_new(request, address):
        ip = client_ip(request, config)
        limit_token_requests(ctx, ip, {"status": "error",
                                       "message": "Too many token requests, try again in {retry} seconds."})
        message = signature = None
        if config.require_signature:
            if request.method != b"POST":
                raise v1_error(MSG_POST_REQUIRED)
            body = parse_object(read_body(request, cap)) if is_json(request) else None
            if not (isinstance(body, dict) and "signature" in body and "message" in body):
                raise v1_error(MSG_POST_JSON)
            message, signature = body["message"], body["signature"]
            if not isinstance(message, str) or not isinstance(signature, str):
                raise v1_error(MSG_POST_JSON)
        result = await node.v1.new_token(address, ip, message, signature)
        return json_body(request, result)

    @app.route(PREFIX + "/heartbeat/<token>", methods=["GET"], endpoint="v1_heartbeat")
    async def v1_heartbeat(request, token):
        return json_body(request, await node.v1.heartbeat(token))

    @app.route(PREFIX + "/chunk/<token>", methods=["GET"], endpoint="v1_chunk")
    @app.route(PREFIX + "/chunk/<token>/<size>", methods=["GET"], endpoint="v1_chunk_size")
    async def v1_chunk(request, token, size=None):
        requested = DEFAULT_CHUNK_SIZE if size is None else unsigned(size)
        chunks = await node.v1.chunks(token, client_ip(request, config), requested)
        return json_body(request, {"chunks": chunks})

    @app.route(PREFIX + "/challenge/<token>", methods=["GET", "POST"], endpoint="v1_challenge")
    @app.route(PREFIX + "/challenge/<token>/<contract_id>", methods=["GET", "POST"], endpoint="v1_challenge_one")
    async def v1_challenge(request, token, contract_id=None):
        if contract_id is not None:
            items: list[Any] | None = [unsigned(contract_id)]
        elif request.method == b"POST":
            items = stream_items(read_body(request, cap), "hashes")
        else:
            items = None  # GET: every active contract of the token
        return json_body(request, {"challenges": await node.v1.challenges(token, items)})

    @app.route(PREFIX + "/answer/<token>", methods=["POST"], endpoint="v1_answer")
    @app.route(PREFIX + "/answer/<token>/<contract_id>", methods=["POST"], endpoint="v1_answer_one")
    async def v1_answer(request, token, contract_id=None):
        raw = plain_body(request, read_body(request, cap), cap)
        if contract_id is None:
            items = stream_items(raw, "proofs")
        else:
            one = unsigned(contract_id)
            body = parse_object(raw)
            items = [{"file_hash": one, "proof": body.get("proof")}] if isinstance(body, dict) else []
        report = await node.v1.answer(token, client_ip(request, config), items)
        return json_body(request, {"report": report})

    @app.route(PREFIX + "/tags/<token>", methods=["GET"], endpoint="v1_tags")
    async def v1_tags(request, token):
        return json_body(request, {"tags": await node.v1.tags(token)})

