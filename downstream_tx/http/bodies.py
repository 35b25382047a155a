"""Protocol v1 request bodies, read as the original server read them (docs/protocol-v1.md): JSON
lists of ids or proofs that end quietly at the first bad item, and a gzip header the client sends
with plain JSON.

No body costs the reactor thread more than a small, fixed slice, however large or malformed it is
(docs/protocol-v1.md, "Request bodies"): a gzip body inflates only up to ``max_inflate_ratio`` times
its size (and the route's cap; past either it is refused with 413); a body of at most
:data:`INLINE_PARSE` bytes is parsed on the reactor thread by orjson (about 0.3 ms for an honest
batch of 100 proofs, ~2 ms for the costliest such body); anything larger, and any body that is not valid
JSON, is read, inflated and parsed by the streaming parser on a worker thread, which hands its C scanner
:data:`SLICE` bytes at a time so that the reactor thread gets the interpreter back between them
(orjson would hold it for the whole parse: 0.3 s for 16 MiB of ``[{},{},…``). The routes look the
token up before they touch a body at all."""

from __future__ import annotations

import zlib
from collections.abc import Awaitable, Callable
from typing import Any

import ijson
import orjson

from downstream_tx.http.errors import ApiError, error_body
from downstream_tx.wire import MAX_ITEMS

GZIP_MAGIC = b"\x1f\x8b"
#: bodies up to this size are parsed on the reactor thread (orjson); larger ones on a worker thread
INLINE_PARSE = 128 << 10
#: a gzip body may always inflate to this size, whatever its ratio
INFLATE_FLOOR = 64 << 10
#: bytes the streaming parser's C scanner reads at a time (it holds the interpreter while it scans)
SLICE = 16 << 10


def read_body(request: Any, limit: int) -> bytes:
    return read_content(request.content, limit)


def read_content(content: Any, limit: int) -> bytes:
    """At most ``limit`` bytes of a request's body (its ``content`` file; None: no body)."""
    return content.read(limit + 1)[:limit] if content is not None else b""


def received(request: Any) -> int:
    """The size of the body a request holds, without reading it."""
    content = request.content
    if content is None:
        return 0
    size = content.seek(0, 2)
    content.seek(0)
    return size


def too_large(message: str) -> ApiError:
    return ApiError(413, error_body("too_large", message))


def inflate_limit(size: int, limit: int, ratio: int) -> int:
    """The most a gzip body of ``size`` bytes may inflate to under a cap of ``limit`` bytes."""
    return min(limit, max(INFLATE_FLOOR, ratio * size))


def inflate(raw: bytes, limit: int, ratio: int) -> bytes:
    """The client sends ``Content-Encoding: gzip`` on /answer with a plain JSON body: the header is
    ignored unless the body really is gzip. A gzip body is inflated within :func:`inflate_limit`
    (else 413 ``too_large``, which says which bound it passed); a truncated or corrupt one is kept
    as sent (it then parses as nothing)."""
    if raw[:2] != GZIP_MAGIC:
        return raw
    allowed = inflate_limit(len(raw), limit, ratio)
    try:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        data = inflater.decompress(raw, allowed + 1)
    except zlib.error:
        return raw
    if len(data) > allowed:
        if allowed < limit:
            raise too_large(f"the gzip body inflates to more than {allowed} bytes ({ratio} times its "
                            f"{len(raw)} bytes, at least {INFLATE_FLOOR})")
        raise too_large(f"the gzip body inflates to more than {limit} bytes")
    return data if inflater.eof else raw


#: nesting levels the fallback parser follows; deeper input ends the list like a parse error
#: (ijson's ``items`` keeps a prefix per level, so its memory grows with the square of the depth:
#: a 200 KB body of nested brackets took gigabytes)
MAX_STREAM_DEPTH = 64


def keyed_list(raw: bytes, key: str) -> list[Any] | None:
    """``body[key]`` of a valid JSON body (``[]`` when it is not an object holding a list there);
    None when the body is not valid JSON."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if isinstance(obj, dict) and isinstance(obj.get(key), list):
        return obj[key]
    return []


def stream_items(raw: bytes, key: str) -> list[Any]:
    """The items of ``body[key]`` as the original's streaming parser (ijson) saw them: valid JSON
    gives the list (or nothing); invalid JSON gives the items before the first error. A body over
    :data:`INLINE_PARSE` bytes is only streamed (its items up to the first error, nesting past
    :data:`MAX_STREAM_DEPTH` or the :data:`~downstream_tx.v1.wire.MAX_ITEMS`-th item): the same list
    for every body a client sends. Its cost grows with ``raw``: off the reactor thread when large."""
    if len(raw) <= INLINE_PARSE:
        keyed = keyed_list(raw, key)
        if keyed is not None:
            return keyed
    else:
        fast = fast_items(raw, key)
        if fast is not None:
            return fast
    return _items_before_error(raw, key)


#: bodies up to this size may be parsed whole by orjson on a worker thread (:func:`fast_items`)
FAST_PARSE = 1 << 20
#: ... if they open at most one container (``{`` or ``[``, strings included) per this many bytes:
#: orjson then holds the interpreter ~2 ms at most (an honest proof opens 11 in ~700 bytes)
FAST_BYTES_PER_CONTAINER = 48


def fast_items(raw: bytes, key: str) -> list[Any] | None:
    """:func:`_items_before_error` of a body that orjson can vouch for, in one C parse instead of
    the streaming parser's Python events (~3x cheaper for a batch of 500 proofs); None when it
    cannot, and the body must be streamed. It vouches for a body of at most :data:`FAST_PARSE`
    bytes, at most one container per :data:`FAST_BYTES_PER_CONTAINER` bytes (a bounded hold of the
    interpreter), that is valid JSON, names ``key`` at most once (``"key"`` at most once in its bytes, no ``\\u``
    escape: a repeated key, which orjson collapses, would be streamed as two lists), nests at most
    :data:`MAX_STREAM_DEPTH` levels and holds no non-integer number (orjson reads it as a float,
    the streaming parser as a Decimal)."""
    if len(raw) > FAST_PARSE or (raw.count(b"{") + raw.count(b"[")) * FAST_BYTES_PER_CONTAINER > len(raw):
        return None
    if raw.count(b'"%s"' % key.encode()) > 1 or b"\\u" in raw:
        return None
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not _plain_within(obj, MAX_STREAM_DEPTH):
        return None
    if isinstance(obj, dict) and isinstance(obj.get(key), list):
        return obj[key][:MAX_ITEMS]
    return []


def _plain_within(obj: Any, depth: int) -> bool:
    """Does ``obj`` (parsed JSON) nest at most ``depth`` containers and hold no float (a number
    orjson reads as a float — a fraction, an exponent, an integer past 64 bits — the streaming
    parser reads as a Decimal or an int)? One pass, a level at a time."""
    level = [obj] if type(obj) in (dict, list) else []
    for _ in range(depth):
        below = []
        for container in level:
            for value in container.values() if type(container) is dict else container:
                kind = type(value)
                if kind is dict or kind is list:
                    below.append(value)
                elif kind is float:
                    return False
        level = below
    return not level


def decode_items(raw: bytes, key: str, limit: int, ratio: int | None) -> list[Any]:
    """:func:`inflate` (unless ``ratio`` is None: the route reads gzip as the bytes they are), then
    :func:`stream_items` (run on a worker thread for a large body)."""
    return stream_items(raw if ratio is None else inflate(raw, limit, ratio), key)


def read_items(content: Any, key: str, limit: int, ratio: int | None) -> list[Any]:
    """:func:`decode_items` of a body still to be read from its ``content`` file (on a worker
    thread: reading 16 MiB takes milliseconds too)."""
    return decode_items(read_content(content, limit), key, limit, ratio)


def _items_before_error(raw: bytes, key: str) -> list[Any]:
    """What ``ijson.items(raw, key + ".item")`` yields before the first parse error, built from
    ijson's prefix-free events with a bounded nesting depth and at most ``MAX_ITEMS`` items."""
    scanner = ItemScanner(key)
    for start in range(0, len(raw), SLICE):
        if scanner.feed(raw[start:start + SLICE]):
            return scanner.items
    scanner.close()
    return scanner.items


class ItemScanner:
    """:func:`_items_before_error` fed :data:`SLICE` bytes at a time (``feed`` until it says it is
    done, then ``close``): each slice is one bounded piece of work, whoever drives it."""

    def __init__(self, key: str):
        self.key = key
        self.items: list[Any] = []
        self.done = False
        self._depth = 0  # containers open
        self._top_is_map = False  # pragma: no mutate (set by the first event that opens depth 1, before use)
        self._current_key: str | None = None
        self._collecting = False  # inside a top-level ``key`` array (depth 2)
        self._builder: ijson.common.ObjectBuilder | None = None
        self._events = ijson.utils.sendable_list()
        self._parser = ijson.basic_parse_coro(self._events)

    def feed(self, piece: bytes) -> bool:
        """Scan the next piece of the body; True once the list is complete (nothing more to read)."""
        if self.done or not piece:  # (an empty piece would tell the parser the body has ended)
            return self.done
        try:
            self._parser.send(piece)
        except Exception:  # any parse error silently ends the list, as in the original
            self.done = True
        self._scan()
        return self.done

    def close(self) -> None:
        """The body ended: a document left open is a parse error (it ends the list where it is)."""
        if not self.done:
            try:
                self._parser.close()
            except Exception:
                pass
            self._scan()
            self.done = True

    def _scan(self) -> None:
        events = self._events
        items, key = self.items, self.key
        depth, top_is_map, current_key = self._depth, self._top_is_map, self._current_key
        collecting, builder = self._collecting, self._builder
        for event, value in events:
            opens, closes = event in ("start_map", "start_array"), event in ("end_map", "end_array")
            if opens:
                depth += 1
                if depth > MAX_STREAM_DEPTH:
                    self.done = True
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
                self.done = True
                break
        del events[:]
        self._depth, self._top_is_map, self._current_key = depth, top_is_map, current_key
        self._collecting, self._builder = collecting, builder


def parse_object(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


class BodyReader:
    """How the routes read a body whose cost grows with its size: within a bounded slice of the
    reactor thread, or on a worker thread (``blocking``, the node's thread runner)."""

    def __init__(self, blocking: Callable[..., Awaitable[Any]], inflate_ratio: int):
        self.blocking = blocking
        self.inflate_ratio = inflate_ratio

    async def items(self, request: Any, key: str, limit: int, inflate_gzip: bool = False) -> list[Any]:
        """The items of ``body[key]`` (:func:`stream_items`) of a request's body capped at ``limit``
        bytes; with ``inflate_gzip`` (/answer), inflated first if it is gzip (413 past the ratio or
        the cap)."""
        ratio = self.inflate_ratio if inflate_gzip else None
        if received(request) > INLINE_PARSE:
            return await self.blocking(read_items, request.content, key, limit, ratio)
        raw = read_body(request, limit)
        gzipped = ratio is not None and raw[:2] == GZIP_MAGIC
        if gzipped and inflate_limit(len(raw), limit, ratio) > INLINE_PARSE:
            return await self.blocking(decode_items, raw, key, limit, ratio)
        data = inflate(raw, limit, ratio) if gzipped else raw
        keyed = keyed_list(data, key)
        if keyed is not None:
            return keyed
        return await self.blocking(_items_before_error, data, key)  # not JSON: streamed, off the reactor

    def object(self, raw: bytes, inflate_gzip: bool = False) -> Any:
        """A body that is one small JSON object (a signed message, one proof): parsed on the reactor
        thread, so at most :data:`INLINE_PARSE` bytes (after inflating) are accepted, else 413.
        None when it is not valid JSON."""
        data = inflate(raw, INLINE_PARSE, self.inflate_ratio) if inflate_gzip else raw
        if len(data) > INLINE_PARSE:
            raise too_large(f"the body of this request is over {INLINE_PARSE} bytes")
        return parse_object(data)


def is_json(request: Any) -> bool:
    """Flask 0.10's ``request.is_json``: only then does ``get_json`` parse the body."""
    value = (request.getHeader(b"content-type") or b"").decode("latin-1").split(";")[0].strip().lower()
    return value == "application/json" or (value.startswith("application/") and value.endswith("+json"))
