"""Protocol v1 request bodies, read as the original server read them (docs/protocol-v1.md): JSON
lists of ids or proofs that end quietly at the first bad item, and a gzip header the client sends
with plain JSON."""

from __future__ import annotations

import zlib
from typing import Any

import ijson
import orjson

from downstream_tx.wire import MAX_ITEMS


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
    top_is_map = False  # pragma: no mutate (always set by the first event that opens depth 1, before use)
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
