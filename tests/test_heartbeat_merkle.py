"""heartbeat.merkle.chunk_hash on a reader shorter than the file size it is told (a truncated
file): the window ends at the short read instead of looping (issue 16, survivor 2)."""

from __future__ import annotations

import hmac

import pytest

from downstream_tx.heartbeat.merkle import chunk_hash


class ShortReader:
    """``size`` bytes of data; reads past the end give b"" (a few times at most, then it fails)."""

    def __init__(self, data: bytes):
        self.data = data
        self.empty_reads = 0

    def read_at(self, pos: int, n: int) -> bytes:
        piece = self.data[pos:pos + n]
        if not piece:
            self.empty_reads += 1
            if self.empty_reads > 3:
                raise AssertionError("chunk_hash kept reading past the end")
        return piece


@pytest.mark.parametrize("filesz", [10_000, 1 << 20])
def test_a_short_read_ends_the_window(filesz):
    data = bytes(range(256)) * 4  # 1024 bytes, less than filesz
    reader = ShortReader(data)
    got = chunk_hash(reader, b"s" * 32, filesz, filesz)  # the window starts at 0 and covers the file
    assert reader.empty_reads == 1
    assert got == hmac.new(b"s" * 32, data, "sha256").digest()


def test_a_full_reader_hashes_the_whole_window():
    data = bytes(range(256)) * 40
    reader = ShortReader(data)
    assert chunk_hash(reader, b"k" * 32, len(data), len(data)) == hmac.new(b"k" * 32, data, "sha256").digest()
    assert reader.empty_reads == 0
