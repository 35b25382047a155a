"""Downloads of stored chunks: streamed from disk a block at a time, one byte range at most."""

from __future__ import annotations

from typing import BinaryIO

from twisted.internet.interfaces import IPushProducer
from twisted.web import resource, server
from twisted.web.iweb import IRequest
from zope.interface import implementer

from downstream_tx.http.errors import error_body, json_body, out_of_descriptors, render_error
from downstream_tx.v0.farming import no_download


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
        if wanted is False:
            self._chunk_headers(request)
            request.setHeader(b"Content-Range", b"bytes */%d" % self.size)
            return json_body(request, error_body("range_not_satisfiable",
                                                 f"range is outside the chunk's {self.size} bytes"), 416)
        try:
            handle = open(self.path, "rb")  # noqa: SIM115 - the producer closes it
        except FileNotFoundError:  # removed between the database check and now
            return render_error(request, no_download())
        except OSError as e:
            if not out_of_descriptors(e):
                raise
            return render_error(request, e)  # 503 with Retry-After
        self._chunk_headers(request)
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

    def _chunk_headers(self, request: IRequest) -> None:
        request.setHeader(b"Accept-Ranges", b"bytes")
        request.setHeader(b"ETag", b'"%s"' % self.file_hash.encode())
