"""The seed's public API (``shared/spec/api-v0.md``): tokens, chunk contracts, due challenges,
answers, and downloads of stored chunks.

Statuses (every error body is ``{"status": <code>, "message": <words>}``):

=====================================================  ===========================================
route                                                  statuses
=====================================================  ===========================================
``GET /api/downstream/new/<addr>``                     200, 400 invalid_address, 403 not_whitelisted,
                                                       429 limit_reached / rate_limited (with
                                                       Retry-After)
``GET /api/downstream/chunk/<token>``                  200, 400 invalid_token, 404 no_token,
                                                       404 no_chunks
``GET|DELETE /api/downstream/remove/<token>/<hash>``   200 ok, 400 invalid_token / invalid_hash,
                                                       404 no_token, 404 no_hash
``GET /api/downstream/due/<token>``                    200, 400 invalid_token, 404 no_token
``GET /api/downstream/challenge/<token>/<hash>/<r>``   200 pass / fail, 400 invalid_token /
                                                       invalid_hash / invalid_response, 404 no_token,
                                                       404 no_hash, 409 not_due
``GET|HEAD /api/download/<hash>``                      200, 206, 400 invalid_hash, 404 no_hash,
                                                       416 range_not_satisfiable
=====================================================  ===========================================

Any route: 404 not_found (no such route), 405 method_not_allowed, 503 unavailable (database down,
with ``Retry-After``), 500 error (details only in the log).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from typing import Any, BinaryIO

from twisted.internet.interfaces import IPushProducer
from twisted.web import resource, server
from twisted.web.iweb import IRequest
from zope.interface import implementer

from downstream_tx.api.common import ApiError, Context, client_ip, error_body, json_body, limit_token_requests
from downstream_tx.node import is_hex64

_HEX32 = re.compile(r"^[0-9a-fA-F]{32}$")
#: Base58 alphabet, 25-byte payload: bitcoin-style addresses are 26 to 35 characters
_ADDRESS = re.compile(r"^[1-9A-HJ-NP-Za-km-z]{26,35}$")


# --- path parameters ------------------------------------------------------------------------------

def address_param(value: str) -> str:
    if not _ADDRESS.match(value):
        raise ApiError(400, error_body("invalid_address", "address must be 26 to 35 Base58 characters"))
    return value


def token_param(value: str) -> str:
    if not _HEX32.match(value):
        raise ApiError(400, error_body("invalid_token", "token must be 32 hexadecimal characters"))
    return value.lower()


def hash_param(value: str) -> str:
    if not is_hex64(value):
        raise ApiError(400, error_body("invalid_hash", "file hash must be 64 hexadecimal characters"))
    return value.lower()


def response_param(value: str) -> str:
    if not is_hex64(value):
        raise ApiError(400, error_body("invalid_response", "hash response must be 64 hexadecimal characters"))
    return value.lower()


def seconds_left(deadline: float, now: float) -> int:
    """Whole seconds until ``deadline``, rounded up (a fresh challenge shows its full interval),
    never negative."""
    return max(0, math.ceil(deadline - now))


# --- download -------------------------------------------------------------------------------------

def parse_range(header: bytes | None, size: int) -> tuple[int, int] | None | bool:
    """The one byte range ``(first, last)`` asked for, ``None`` to send the whole chunk, or ``False``
    when the range cannot be satisfied (416).

    Only a single ``bytes=`` range is honoured (``a-b``, ``a-``, ``-n``); a header that is not a
    valid single byte range (other units, several ranges, ``b < a``, junk) is ignored and the whole
    chunk is sent, as RFC 9110 allows.
    """
    if header is None:
        return None
    try:
        text = header.decode("ascii").strip()
    except UnicodeDecodeError:
        return None
    unit, sep, spec = text.partition("=")
    if not sep or unit.strip().lower() != "bytes" or "," in spec:
        return None
    first_text, dash, last_text = spec.strip().partition("-")
    first_text, last_text = first_text.strip(), last_text.strip()
    if not dash or not (first_text.isdigit() or first_text == "") or not (last_text.isdigit() or last_text == ""):
        return None
    if first_text == "":
        if last_text == "":
            return None
        suffix = int(last_text)
        if suffix == 0 or size == 0:
            return False
        return max(0, size - suffix), size - 1
    first = int(first_text)
    if last_text != "" and int(last_text) < first:
        return None
    if first >= size:
        return False
    last = size - 1 if last_text == "" else min(int(last_text), size - 1)
    return first, last


@implementer(IPushProducer)
class FileRangeProducer:
    """Streams ``size`` bytes of an open file from ``offset`` into a request, a block at a time.

    A push producer: it writes until the transport's buffer is full (the transport then calls
    :meth:`pauseProducing`, synchronously, from inside ``write``) and carries on when the transport
    drains it, so memory stays at about one block per download whatever the chunk's size. (Twisted's
    own static producers are pull producers, which the HTTP channel drives through the global
    cooperator; this one needs no global reactor.)
    """

    BLOCK = 1 << 16

    def __init__(self, request: IRequest, handle: BinaryIO, offset: int, size: int):
        self.request = request
        self.handle = handle
        self.offset = offset
        self.remaining = size
        self.paused = False
        self.stopped = False
        self._producing = False

    def start(self) -> None:
        self.handle.seek(self.offset)
        self.request.registerProducer(self, True)
        self._produce()

    def _produce(self) -> None:
        if self._producing:  # a resume from inside our own write: the running loop carries on
            return
        self._producing = True
        try:
            while not self.paused and not self.stopped and self.remaining > 0:
                block = self.handle.read(min(self.BLOCK, self.remaining))
                if not block:  # the file shrank under us: end the response short (the client sees it)
                    break
                self.remaining -= len(block)
                self.request.write(block)
        finally:
            self._producing = False
        if not self.stopped and (self.remaining <= 0 or not self.paused):
            self._done()

    def _done(self) -> None:
        self.stopped = True
        self.handle.close()
        self.request.unregisterProducer()
        self.request.finish()

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        if not self.stopped:
            self._produce()

    def stopProducing(self) -> None:
        self.stopped = True
        self.handle.close()


class ChunkDownload(resource.Resource):
    """One stored chunk streamed from disk with a pull producer (never read whole into memory)."""

    isLeaf = True

    def __init__(self, path: str, size: int, file_hash: str):
        super().__init__()
        self.path = path
        self.size = size
        self.file_hash = file_hash

    def render_HEAD(self, request: IRequest) -> bytes | int:
        return self.render_GET(request)

    def render_GET(self, request: IRequest) -> bytes | int:
        wanted = parse_range(request.getHeader(b"range"), self.size)
        request.setHeader(b"Accept-Ranges", b"bytes")
        request.setHeader(b"ETag", b'"%s"' % self.file_hash.encode())
        if wanted is False:
            request.setHeader(b"Content-Range", b"bytes */%d" % self.size)
            return json_body(request, error_body("range_not_satisfiable",
                                                 f"range is outside the chunk's {self.size} bytes"), 416)
        try:
            handle = open(self.path, "rb")  # noqa: SIM115 - the producer closes it
        except FileNotFoundError:  # removed between the database check and now
            return json_body(request, error_body("no_hash", "no such file is monitored"), 404)
        request.setHeader(b"Content-Type", b"application/octet-stream")
        if wanted is None:
            first, last = 0, self.size - 1
            request.setResponseCode(200)
        else:
            first, last = wanted
            request.setResponseCode(206)
            request.setHeader(b"Content-Range", b"bytes %d-%d/%d" % (first, last, self.size))
        request.setHeader(b"Content-Length", b"%d" % (last - first + 1))
        if request.method == b"HEAD":
            handle.close()
            return b""
        FileRangeProducer(request, handle, first, last - first + 1).start()
        return server.NOT_DONE_YET


# --- routes ---------------------------------------------------------------------------------------

def _route(request: IRequest, pattern: str) -> None:
    """Record the matched pattern for logs (the raw path holds a token)."""
    request._dtx_route = pattern  # type: ignore[attr-defined]


def register(app: Any, ctx: Context) -> None:
    node = ctx.node

    def download_url(file_hash: str) -> str:
        return f"{ctx.config.base_url}/api/download/{file_hash}"

    def route(pattern: str, methods: list[str]) -> Callable:
        def decorate(handler: Callable) -> Callable:
            async def wrapped(request: IRequest, **params: str) -> Any:
                _route(request, pattern)
                return await handler(request, **params)

            wrapped.__name__ = handler.__name__
            return app.route(pattern, methods=methods)(wrapped)

        return decorate

    @route("/api/downstream/new/<addr>", ["GET"])
    async def new_token(request, addr):
        ip = client_ip(request, ctx.config)
        limit_token_requests(ctx, ip, error_body("rate_limited", "too many token requests from this address, "
                                                                 "try again in {retry} seconds"))
        address = address_param(addr)
        token = await node.create_token(address, ip=ip)
        return json_body(request, {"token": token})

    @route("/api/downstream/chunk/<token>", ["GET"])
    async def chunk(request, token):
        token = token_param(token)
        a = await node.get_chunk(token)
        return json_body(request, {
            "url": download_url(a.file_hash), "file_hash": a.file_hash, "challenge": a.challenge.hex(),
            "interval": a.interval, "size": a.size, "due": seconds_left(a.deadline, node.now()),
        })

    @route("/api/downstream/remove/<token>/<file_hash>", ["GET", "DELETE"])
    async def remove(request, token, file_hash):
        token, file_hash = token_param(token), hash_param(file_hash)
        await node.end_contract(token, file_hash)
        return json_body(request, {"status": "ok"})

    @route("/api/downstream/due/<token>", ["GET"])
    async def due(request, token):
        token = token_param(token)
        every, outstanding = await node.due(token)
        now = node.now()
        return json_body(request, {
            "all_contracts": [{"hash": r["file_hash"]} for r in every],
            "due_contracts": [{"hash": r["file_hash"], "challenge": r["challenge"].hex(),
                               "due": seconds_left(r["deadline"], now)} for r in outstanding],
        })

    @route("/api/downstream/challenge/<token>/<file_hash>/<hash_response>", ["GET"])
    async def challenge(request, token, file_hash, hash_response):
        token, file_hash, answer = token_param(token), hash_param(file_hash), response_param(hash_response)
        return json_body(request, {"status": await node.answer(token, file_hash, answer)})

    @route("/api/download/<file_hash>", ["GET", "HEAD"])
    async def download(request, file_hash):
        file_hash = hash_param(file_hash)
        path, size = await node.download(file_hash)
        if not os.path.isfile(path):
            raise ApiError(404, error_body("no_hash", "no such file is stored on this node"))
        return ChunkDownload(path, size, file_hash)
