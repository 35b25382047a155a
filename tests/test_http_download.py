"""http/download: ``parse_range`` (the Range header), the streaming producer (blocks, pausing,
stopping, a shrunk file, a resume from inside a write), a range through the server, a chunk removed
before its download. (Download capabilities of v0 contracts: tests/test_downloads.py.)"""

from __future__ import annotations

import io

import pytest

from downstream_tx.http.download import parse_range

HASH = "cd" * 32


# --- parse_range ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("header, size, expected", [
    (None, 100, None),
    (b"bytes=0-9", 100, (0, 9)),
    (b"bytes=10-", 100, (10, 99)),
    (b"bytes=-10", 100, (90, 99)),
    (b"bytes=-100", 100, (0, 99)),
    (b"bytes=-1000", 100, (0, 99)),
    (b"bytes=-1", 100, (99, 99)),
    (b"bytes=-1", 1, (0, 0)),
    (b"bytes=0-0", 1, (0, 0)),
    (b" Bytes = 5 - 7 ", 100, (5, 7)),
    (b"BYTES=5-7", 100, (5, 7)),
    (b"bytes=5-5", 100, (5, 5)),
    (b"bytes=5-4", 100, None),
    (b"bytes=50-1000", 100, (50, 99)),
    (b"bytes=0-99", 100, (0, 99)),
    (b"bytes=0-100", 100, (0, 99)),
    (b"bytes=99-", 100, (99, 99)),
    (b"bytes=99-99", 100, (99, 99)),
    (b"bytes=100-", 100, False),
    (b"bytes=100-200", 100, False),
    (b"bytes=101-", 100, False),
    (b"bytes=0-", 0, False),
    (b"bytes=-0", 100, False),
    (b"bytes=-5", 0, False),
    (b"bytes=-", 100, None),
    (b"bytes=", 100, None),
    (b"bytes=5", 100, None),
    (b"bytes5-7", 100, None),
    (b"items=5-7", 100, None),
    (b"bytes=5-7,8-9", 100, None),
    (b"bytes=a-7", 100, None),
    (b"bytes=5-b", 100, None),
    (b"bytes=-b", 100, None),
    (b"bytes=5-7-9", 100, None),
    (b"bytes=\xe9-7", 100, None),
    (b"=5-7", 100, None),
])
def test_parse_range(header, size, expected):
    assert parse_range(header, size) == expected


# --- the producer --------------------------------------------------------------------------------------

def test_the_download_producer_is_a_push_producer():
    from twisted.internet.interfaces import IPushProducer
    from zope.interface.verify import verifyClass

    from downstream_tx.http.download import FileRangeProducer

    assert IPushProducer.implementedBy(FileRangeProducer) and verifyClass(IPushProducer, FileRangeProducer)


class FakeDownloadRequest:
    """Records what a producer does to a request; ``pause_after`` writes, the transport is full."""

    def __init__(self, pause_after: int | None = None):
        self.writes: list[bytes] = []
        self.registered: list = []
        self.unregistered = self.finished = 0
        self.pause_after = pause_after

    def registerProducer(self, producer, streaming):
        self.registered.append((producer, streaming))

    def unregisterProducer(self):
        self.unregistered += 1

    def finish(self):
        self.finished += 1

    def write(self, data: bytes):
        self.writes.append(data)
        if self.pause_after is not None and len(self.writes) % self.pause_after == 0:
            self.registered[0][0].pauseProducing()


def test_the_producer_streams_its_range_a_block_at_a_time():
    from downstream_tx.http.download import FileRangeProducer

    assert FileRangeProducer.BLOCK == 64 * 1024
    data = bytes(range(256)) * 1000
    handle = io.BytesIO(data)
    req = FakeDownloadRequest()
    producer = FileRangeProducer(req, handle, 10, 150_000)
    assert (producer.paused, producer.stopped, producer._producing) == (False, False, False)
    producer.start()
    assert req.registered == [(producer, True)]
    assert [len(w) for w in req.writes] == [65536, 65536, 150_000 - 2 * 65536]
    assert b"".join(req.writes) == data[10:150_010]
    assert (req.unregistered, req.finished, handle.closed, producer.stopped) == (1, 1, True, True)


def test_the_producer_pauses_and_resumes():
    from downstream_tx.http.download import FileRangeProducer

    data = b"x" * (3 * 65536 + 5)
    req = FakeDownloadRequest(pause_after=1)
    handle = io.BytesIO(data)
    producer = FileRangeProducer(req, handle, 0, len(data))
    producer.start()
    assert len(req.writes) == 1 and producer.paused and req.finished == 0
    producer.resumeProducing()
    assert len(req.writes) == 2 and req.finished == 0
    producer.resumeProducing()
    producer.resumeProducing()
    # the last block written: done at once, though the transport asked for a pause
    assert [len(w) for w in req.writes] == [65536, 65536, 65536, 5]
    assert (req.unregistered, req.finished, handle.closed) == (1, 1, True)
    producer.resumeProducing()  # nothing more after the end
    assert (len(req.writes), req.finished) == (4, 1)


def test_the_producer_stops_and_ends_short_on_a_shrunk_file():
    from downstream_tx.http.download import FileRangeProducer

    req = FakeDownloadRequest(pause_after=1)
    handle = io.BytesIO(b"y" * 200_000)
    producer = FileRangeProducer(req, handle, 0, 200_000)
    producer.start()
    producer.stopProducing()
    assert handle.closed and producer.stopped
    producer.resumeProducing()
    assert len(req.writes) == 1 and req.finished == 0
    # a file shorter than the range: the response ends after what there was
    req = FakeDownloadRequest()
    handle = io.BytesIO(b"z" * 70_000)
    FileRangeProducer(req, handle, 0, 200_000).start()
    assert [len(w) for w in req.writes] == [65536, 70_000 - 65536] and req.finished == 1


def test_a_resume_from_inside_a_write_does_not_start_a_second_loop():
    from downstream_tx.http.download import FileRangeProducer

    class Reentrant(FakeDownloadRequest):
        def write(self, data):
            super().write(data)
            producer = self.registered[0][0]
            producer.pauseProducing()
            producer.resumeProducing()  # the transport drained at once

    req = Reentrant()
    FileRangeProducer(req, io.BytesIO(b"w" * 140_000), 0, 140_000).start()
    assert [len(w) for w in req.writes] == [65536, 65536, 140_000 - 2 * 65536]
    assert req.finished == 1
    # many blocks: the one loop carries on (a nested loop per resume would overflow the stack)
    req = Reentrant()
    producer = FileRangeProducer(req, io.BytesIO(b"v" * 5000), 0, 5000)
    producer.BLOCK = 1
    producer.start()
    assert len(req.writes) == 5000 and req.finished == 1


# --- the resource --------------------------------------------------------------------------------------

def test_a_range_download_through_the_server(node, tmp_path):
    from support import StubClient, add_test_file, make_resource, new_token

    file_hash = add_test_file(node, tmp_path, size=1000)
    client = StubClient(make_resource(node))
    url = client.get(f"/api/downstream/chunk/{new_token(client)}").json()["url"]
    path = url[url.index("/api/download/"):]  # the contract's download URL, with its capability
    r = client.get(path)
    data = r.body  # the chunk as stored
    assert (r.code, len(data), r.header("etag")) == (200, 1000, f'"{file_hash}"')
    r = client.get(path, headers={"Range": "bytes=-10"})
    assert (r.code, r.body, r.length) == (206, data[-10:], 10)
    assert (r.header("content-range"), r.header("accept-ranges"), r.header("etag")) == (
        "bytes 990-999/1000", "bytes", f'"{file_hash}"')
    r = client.get(path, headers={"Range": "bytes=1000-"})
    assert (r.code, r.header("content-range")) == (416, "bytes */1000")


def test_a_chunk_removed_before_its_download_is_a_404(tmp_path):
    from twisted.web.test.requesthelper import DummyRequest

    from downstream_tx.http.download import ChunkDownload

    request = DummyRequest([b""])
    body = ChunkDownload(str(tmp_path / "gone.bin"), 10, HASH).render_GET(request)
    assert request.responseCode == 404
    assert body == b'{"status":"no_hash","message":"no such file is stored on this node"}'
