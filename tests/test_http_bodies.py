"""http/bodies directly: which Content-Types are JSON, the gzip guard, and the fallback parser's
bounds (issue 16, survivors 8-10)."""

from __future__ import annotations

import gzip
import io
import json
import os
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from downstream_tx import wire as shared
from downstream_tx.http import bodies
from downstream_tx.http.errors import ApiError


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
    assert bodies.inflate(b'{"proofs": []}', 100, 16) == b'{"proofs": []}'


def test_a_gzip_body_is_inflated():
    data = b'{"proofs": [1, 2, 3]}'
    assert bodies.inflate(gzip.compress(data), 1000, 16) == data


def test_a_truncated_gzip_body_is_not_inflated():
    data = b'{"proofs": [' + b"1, " * 2000 + b"1]}"
    raw = gzip.compress(data)
    for cut in (len(raw) - 4, len(raw) - 8, len(raw) // 2):
        assert bodies.inflate(raw[:cut], 10**6, 16) == raw[:cut]


def test_a_corrupt_gzip_body_is_kept_as_sent():
    raw = b"\x1f\x8b" + b"\x00" * 30
    assert bodies.inflate(raw, 1000, 16) == raw


def test_the_inflated_size_cap_is_inclusive_and_past_it_is_a_413():
    limit = 4096
    exact = b"a" * limit
    assert bodies.inflate(gzip.compress(exact), limit, 1000) == exact
    over = b"a" * (limit + 1)
    with pytest.raises(ApiError) as e:
        bodies.inflate(gzip.compress(over), limit, 1000)
    assert (e.value.code, e.value.body["status"]) == (413, "too_large")
    assert e.value.body["message"] == f"the gzip body inflates to more than {limit} bytes"
    # a raw deflate stream is not what the header says: kept
    raw = zlib.compress(exact)
    assert bodies.inflate(raw, limit, 1000) == raw


def test_inflation_is_bounded_by_ratio_above_the_floor():
    """A small body may inflate to the floor (64 KiB) whatever its ratio; above the floor, to
    ``ratio`` times its size; the cap bounds both."""
    floor = bodies.INFLATE_FLOOR
    at_floor = gzip.compress(b" " * floor)
    assert len(at_floor) * 16 < floor
    assert bodies.inflate(at_floor, 1 << 30, 16) == b" " * floor
    over = gzip.compress(b" " * (floor + 1))
    with pytest.raises(ApiError) as e:
        bodies.inflate(over, 1 << 30, 16)
    assert e.value.code == 413
    assert e.value.body["message"] == (f"the gzip body inflates to more than {floor} bytes (16 times its "
                                       f"{len(over)} bytes, at least {floor})")
    data = os.urandom(100_000).hex().encode()  # compresses about 2:1
    packed = gzip.compress(data)
    assert bodies.inflate(packed, 1 << 30, 3) == data
    with pytest.raises(ApiError):
        bodies.inflate(packed, 1 << 30, 1)
    assert bodies.inflate_limit(1000, 10 << 20, 16) == floor
    assert bodies.inflate_limit(10_000, 10 << 20, 16) == 160_000
    assert bodies.inflate_limit(10_000, 100_000, 16) == 100_000


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


def test_the_documented_bounds():
    assert (bodies.INLINE_PARSE, bodies.INFLATE_FLOOR, bodies.SLICE) == (128 << 10, 64 << 10, 16 << 10)


def test_received_is_the_body_size_and_leaves_it_unread():
    class Request:
        def __init__(self, content):
            self.content = content

    assert bodies.received(Request(None)) == 0
    body = io.BytesIO(b"0123456789")
    assert bodies.received(Request(body)) == 10 and body.tell() == 0


def test_the_scanner_is_done_at_the_first_parse_error():
    scanner = bodies.ItemScanner("hashes")
    assert scanner.feed(b'{"hashes": [1, 2') is False
    assert scanner.feed(b", x, 3]}") is True
    assert scanner.feed(b"anything") is True and scanner.items == [1, 2]


# --- large bodies: orjson where it gives the streaming parser's list ----------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(1 << 70), 1 << 70) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(["proofs", "a", "b"]), inner,
                                                                 max_size=3),
    max_leaves=20)


def padded(text: bytes, size: int = bodies.INLINE_PARSE + 1) -> bytes:
    """``text`` (a JSON object's text) with whitespace before its closing brace up to ``size``."""
    return text[:-1] + b" " * max(0, size - len(text)) + text[-1:]


@settings(max_examples=300, deadline=None)
@given(items=st.lists(JSON_VALUES, max_size=6), extra=JSON_VALUES, before=st.booleans())
def test_the_fast_parse_gives_the_streaming_list_or_nothing(items, extra, before):
    pairs = [("x", extra), ("proofs", items)] if before else [("proofs", items), ("x", extra)]
    text = ("{" + ",".join(f'"{k}":{json.dumps(v)}' for k, v in pairs) + "}").encode()
    raw = padded(text, len(text) + 200)
    fast = bodies.fast_items(raw, "proofs")
    assert fast is None or fast == bodies._items_before_error(raw, "proofs")


@pytest.mark.parametrize("text", [
    b'{"proofs": [1], "proofs": [2]}',  # a repeated key: streamed as [1, 2], orjson keeps [2]
    b'{"proofs": [1, 2.5]}',  # a Decimal to the streaming parser
    b'{"proofs": [1, 1e3]}',
    b'{"proofs": [1, 36893488147419103232]}',  # past 64 bits: orjson reads a float
    b'{"proofs": [1, ' + b"[" * 70 + b"]" * 70 + b"]}",  # deeper than the streaming parser follows
    b'{"pro\\u006ffs": [1]}',
    b'{"proofs": [1, 2}',  # not JSON
])
def test_bodies_the_fast_parse_does_not_vouch_for_are_streamed(text):
    assert bodies.fast_items(padded(text), "proofs") is None


def test_a_large_honest_batch_is_parsed_in_one_piece(monkeypatch):
    proof = {"leaf": {"index": 7, "blob": "QUJD" * 8}, "branch": {"rows": [["QUJD" * 11, "REVG" * 11]] * 6}}
    raw = json.dumps({"proofs": [{"file_hash": n, "proof": proof} for n in range(600)]}).encode()
    assert len(raw) > bodies.INLINE_PARSE
    streamed = bodies._items_before_error(raw, "proofs")
    monkeypatch.setattr(bodies, "ItemScanner", None)  # the streaming parser is not used at all
    assert bodies.stream_items(raw, "proofs") == streamed
    assert bodies.fast_items(padded(b'{"x": 1}'), "proofs") == []


def test_a_large_body_dense_with_containers_is_streamed():
    raw = b'{"proofs": [' + b",".join([b"{}"] * 4000) + b"]}"
    assert bodies.fast_items(padded(raw), "proofs") is None
    assert len(bodies.stream_items(padded(raw), "proofs")) == 4000

# --- reads, inflation, objects, the fallback parser's edges, more Content-Types ------------------------

class Body:
    """A request whose body is ``content`` (None: no body at all); records the sizes read."""

    def __init__(self, content: bytes | None, content_type: bytes | None = None):
        self.content = None if content is None else io.BytesIO(content)
        self.reads: list[int] = []
        self.content_type = content_type
        if self.content is not None:
            read = self.content.read

            def spy(n: int = -1) -> bytes:
                self.reads.append(n)
                return read(n)

            self.content.read = spy  # type: ignore[method-assign]

    def getHeader(self, name: bytes):
        return self.content_type


def test_read_body_reads_at_most_limit_plus_one_and_keeps_limit():
    req = Body(b"abcdefgh")
    assert bodies.read_body(req, 5) == b"abcde"
    assert req.reads == [6]
    assert bodies.read_body(Body(b"abc"), 5) == b"abc"
    assert bodies.read_body(Body(b""), 5) == b""
    assert bodies.read_body(Body(None), 5) == b""


def test_inflate_only_inflates_what_starts_with_the_gzip_magic():
    data = b'{"proofs": [1]}'
    packed = gzip.compress(data)
    assert bodies.inflate(packed, 100, 16) == data
    # one byte of the magic is not enough
    assert bodies.inflate(b"\x1f" + packed[2:], 100, 16) == b"\x1f" + packed[2:]
    assert bodies.inflate(b"\x1f", 100, 16) == b"\x1f"
    assert bodies.inflate(b"", 100, 16) == b""


def test_parse_object():
    assert bodies.parse_object(b'{"a": 1}') == {"a": 1}
    assert bodies.parse_object(b"[1, 2]") == [1, 2]
    assert bodies.parse_object(b"{nope") is None
    assert bodies.parse_object(b"") is None


def test_stream_items_of_valid_json_that_is_not_a_keyed_list():
    assert bodies.stream_items(b'[1, 2]', "hashes") == []
    assert bodies.stream_items(b'{"other": [1]}', "hashes") == []
    assert bodies.stream_items(b'{"hashes": [{"a": 1}, 2]}', "hashes") == [{"a": 1}, 2]


def test_fallback_parser_reads_only_the_keyed_top_level_array():
    # a top-level scalar, a top-level array, a keyed array that is not at the top
    assert bodies._items_before_error(b"5 x", "hashes") == []
    assert bodies._items_before_error(b'"hashes" x', "hashes") == []
    assert bodies._items_before_error(b"[1, 2, x", "hashes") == []
    assert bodies._items_before_error(b'[[1, 2], x', "hashes") == []
    assert bodies._items_before_error(b'{"a": {"hashes": [1, 2]}, x', "hashes") == []
    # a key's value that is not an array, then the array under the right key
    assert bodies._items_before_error(b'{"hashes": 5, x', "hashes") == []
    assert bodies._items_before_error(b'{"hashes": {"hashes": [1]}, x', "hashes") == []
    assert bodies._items_before_error(b'{"x": 1, "hashes": [1, 2], x', "hashes") == [1, 2]
    # another key's array after the keyed one is not read
    assert bodies._items_before_error(b'{"hashes": [1], "hashes2": [2], x', "hashes") == [1]


def test_fallback_parser_builds_nested_items_whole():
    raw = b'{"proofs": [{"file_hash": 1, "proof": {"a": [1, [2]], "b": {}}}, [], {}, 3, "s", null, true, x'
    assert bodies._items_before_error(raw, "proofs") == [
        {"file_hash": 1, "proof": {"a": [1, [2]], "b": {}}}, [], {}, 3, "s", None, True]
    # an unfinished item is not returned
    assert bodies._items_before_error(b'{"proofs": [1, {"a": [1, 2', "proofs") == [1]
    assert bodies._items_before_error(b'{"proofs": [[1, 2], [3', "proofs") == [[1, 2]]


def test_fallback_parser_counts_depth_down_as_containers_close():
    # many shallow containers in a row never add up to a deep one
    raw = b'{"hashes": [' + b"[], " * 100 + b"7, x"
    assert bodies._items_before_error(raw, "hashes") == [[]] * 100 + [7]
    raw = b'{"a": [[]], "b": [[[]]], "hashes": [1], x'
    assert bodies._items_before_error(raw, "hashes") == [1]


def test_fallback_parser_max_items_counts_nested_items_too():
    raw = b'{"hashes": [' + b"[1], " * 5100 + b"x"
    assert len(bodies._items_before_error(raw, "hashes")) == shared.MAX_ITEMS


@pytest.mark.parametrize("value, parsed", [
    (b"application/json ; charset=utf-8", True), (b"  application/json", True), (b"APPLICATION/JSON", True),
    (b"application/+json", True), (b"application/json+xml", False), (b"application/x-www-form-urlencoded", False),
    (b"text/plain; application/json", False), (b"application/\xe9+json", True),
])
def test_is_json_more(value, parsed):
    assert bodies.is_json(Body(b"", value)) is parsed
