"""http/bodies directly: which Content-Types are JSON, the gzip guard, and the fallback parser's
bounds (issue 16, survivors 8-10)."""

from __future__ import annotations

import gzip
import zlib

import pytest

from downstream_tx.http import bodies


class FakeRequest:
    def __init__(self, content_type: bytes | None = None):
        self.content_type = content_type

    def getHeader(self, name: bytes):
        assert name == b"content-type"
        return self.content_type


@pytest.mark.parametrize("value, parsed", [
    (b"application/json", True), (b"Application/JSON; charset=utf-8", True), (b"application/x+json", True),
    (b"application/vnd.api+json", True), (b"application/octet-stream", False), (b"text/json", False),
    (b"text/x+json", False), (b"application/jsonx", False), (b"", False), (None, False),
])
def test_is_json(value, parsed):
    assert bodies.is_json(FakeRequest(value)) is parsed


# --- the gzip guard ----------------------------------------------------------------------------------

def test_a_plain_body_with_a_gzip_header_is_kept():
    assert bodies.plain_body(None, b'{"proofs": []}', 100) == b'{"proofs": []}'


def test_a_gzip_body_is_inflated():
    data = b'{"proofs": [1, 2, 3]}'
    assert bodies.plain_body(None, gzip.compress(data), 1000) == data


def test_a_truncated_gzip_body_is_not_inflated():
    data = b'{"proofs": [' + b"1, " * 2000 + b"1]}"
    raw = gzip.compress(data)
    for cut in (len(raw) - 4, len(raw) - 8, len(raw) // 2):
        assert bodies.plain_body(None, raw[:cut], 10**6) == raw[:cut]


def test_a_corrupt_gzip_body_is_kept_as_sent():
    raw = b"\x1f\x8b" + b"\x00" * 30
    assert bodies.plain_body(None, raw, 1000) == raw


def test_the_inflated_size_cap_is_inclusive():
    limit = 4096
    exact = b"a" * limit
    assert bodies.plain_body(None, gzip.compress(exact), limit) == exact
    over = b"a" * (limit + 1)
    assert bodies.plain_body(None, gzip.compress(over), limit) == gzip.compress(over)
    # a raw deflate stream is not what the header says: kept
    raw = zlib.compress(exact)
    assert bodies.plain_body(None, raw, limit) == raw


# --- the fallback parser -----------------------------------------------------------------------------

def nested(k: int) -> bytes:
    return b"[" * k + b"]" * k


def value_of(k: int):
    out: list = []
    for _ in range(k - 1):
        out = [out]
    return out


def test_items_after_the_array_closes_are_not_returned():
    assert bodies._items_before_error(b'{"hashes": [1, 2], "other": [3, 4], "x": 5', "hashes") == [1, 2]
    assert bodies._items_before_error(b'{"hashes": [1, {"a": [2]}], "other": {"b": 3}', "hashes") == [1, {"a": [2]}]
    assert bodies._items_before_error(b'{"other": [3], "hashes": [1, 2', "hashes") == [1, 2]
    assert bodies._items_before_error(b'[{"hashes": [1]}', "hashes") == []


def test_items_after_a_too_deep_item_are_not_returned():
    raw = b'{"hashes": [1, ' + nested(70) + b", 2]"
    assert bodies._items_before_error(raw, "hashes") == [1]
    # too deep anywhere ends the parse, as an error would: a later list is not read either
    raw = b'{"other": ' + nested(70) + b', "hashes": [1, 2] x'
    assert bodies._items_before_error(raw, "hashes") == []
    raw = b'{"other": ' + nested(60) + b', "hashes": [1, 2] x'
    assert bodies._items_before_error(raw, "hashes") == [1, 2]


def test_nesting_depth_64_is_followed_and_65_ends_the_list():
    assert bodies.MAX_STREAM_DEPTH == 64
    # the object is depth 1, the array depth 2: an item of k brackets reaches depth 2 + k
    ok = b'{"hashes": [1, ' + nested(62) + b", 2] x"
    assert bodies._items_before_error(ok, "hashes") == [1, value_of(62), 2]
    deep = b'{"hashes": [1, ' + nested(63) + b", 2] x"
    assert bodies._items_before_error(deep, "hashes") == [1]


def test_stream_items_prefers_valid_json():
    assert bodies.stream_items(b'{"hashes": [1, 2]}', "hashes") == [1, 2]
    assert bodies.stream_items(b'{"hashes": 5}', "hashes") == []
    assert bodies.stream_items(b'{"hashes": [1, 2, x', "hashes") == [1, 2]
    assert bodies.stream_items(b"", "hashes") == []


def test_the_fallback_parser_stops_at_max_items():
    raw = b'{"hashes": [' + b"1, " * 6000 + b"x"
    assert len(bodies._items_before_error(raw, "hashes")) == 5000
