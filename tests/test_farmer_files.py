"""The farmer's files: atomic writes, the 2015 history and identity files, the binary tag file."""

from __future__ import annotations

import json
import os
import stat

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from downstream_tx.farmer import files
from downstream_tx.farmer.files import FarmerFileError, History, Identities, SignedMessage, atomic_write
from downstream_tx.farmer.tagfile import TagDamaged, decode_tag, encode_tag
from downstream_tx.heartbeat import MerkleTree, Tag
from support import ADDRESS
from support.v1 import SIG_MESSAGE, SIGNATURE


def test_atomic_write_replaces_the_whole_file(tmp_path):
    path = tmp_path / "sub" / "state.json"
    atomic_write(str(path), b"old")
    atomic_write(str(path), b"new contents")
    assert path.read_bytes() == b"new contents"
    assert os.listdir(path.parent) == ["state.json"]  # no temporary file left behind


def test_atomic_write_that_fails_keeps_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "state.json"
    atomic_write(str(path), b"old")

    def full(fd, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "write", full)
    with pytest.raises(OSError):
        atomic_write(str(path), b"new")
    monkeypatch.undo()
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["state.json"]


def test_history_reads_and_writes_the_2015_format(tmp_path):
    path = tmp_path / "data" / "history.json"
    path.parent.mkdir()
    # as downstream-farmer 0.1.8 wrote it
    path.write_text(json.dumps({"last_node": "http://a:5000",
                                "nodes": {"http://a:5000": {"token": "ab" * 16, "address": ADDRESS}}}))
    history = History.load(str(path))
    assert history.last_node == "http://a:5000"
    assert history.entry("http://a:5000") == ("ab" * 16, ADDRESS)
    assert history.entry("http://b:5000") == (None, None)
    history.remember("http://b:5000", "cd" * 16, ADDRESS)
    history.save()
    saved = json.loads(path.read_text())
    assert saved == {"last_node": "http://b:5000",
                     "nodes": {"http://a:5000": {"token": "ab" * 16, "address": ADDRESS},
                               "http://b:5000": {"token": "cd" * 16, "address": ADDRESS}}}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # tokens are secrets


def test_a_missing_history_is_empty_and_a_broken_one_is_named(tmp_path):
    assert History.load(str(tmp_path / "none.json")).data == {}
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(FarmerFileError, match="Couldn't parse '.*bad.json'"):
        History.load(str(bad))
    bad.write_text('{"nodes": []}')
    with pytest.raises(FarmerFileError, match="nodes"):
        History.load(str(bad))


def test_identities_in_the_2015_format_and_per_node(tmp_path):
    path = tmp_path / "identities.json"
    path.write_text(json.dumps({ADDRESS: {"message": SIG_MESSAGE, "signature": SIGNATURE,
                                          "nodes": {"http://b:5000": {"message": "for b", "signature": "x"}}}}))
    ids = Identities.load(str(path))
    assert ids.first_address() == ADDRESS
    assert ids.signed_message(ADDRESS, "http://a:5000") == SignedMessage(SIG_MESSAGE, SIGNATURE)
    assert ids.signed_message(ADDRESS, "http://b:5000") == SignedMessage("for b", "x")
    assert ids.signed_message("1OtherAddress", "http://a:5000") is None
    assert files.check_signature(ADDRESS, SignedMessage(SIG_MESSAGE, SIGNATURE)) is None
    assert "does not match" in files.check_signature(ADDRESS, SignedMessage("test messagf", SIGNATURE))
    assert "not a valid SJCX address" in files.check_signature("1abc", SignedMessage(SIG_MESSAGE, SIGNATURE))


@pytest.mark.parametrize("content", ['{"addr": "text"}', '{"addr": {"message": "m"}}', "[]",
                                     '{"addr": {"message": "m", "signature": "s", "nodes": {"u": {}}}}'])
def test_an_identity_file_in_another_shape_says_what_it_should_be(tmp_path, content):
    path = tmp_path / "identities.json"
    path.write_text(content)
    with pytest.raises(FarmerFileError, match="should be a JSON object|expected a JSON object"):
        Identities.load(str(path))


# --- the tag file ----------------------------------------------------------------------------------

blobs = st.one_of(st.just(b""), st.binary(min_size=32, max_size=32), st.binary(min_size=0, max_size=64))


@st.composite
def tags(draw):
    order = draw(st.integers(0, 5))
    nodes = draw(st.lists(blobs, min_size=2 << order, max_size=2 << order))
    filesz = draw(st.one_of(st.none(), st.integers(0, 1 << 40)))
    return Tag(MerkleTree(nodes, order, []), draw(st.integers(0, 1 << 40)), filesz)


@settings(max_examples=200, deadline=None)
@given(tags())
def test_a_tag_file_gives_back_the_tag(tag):
    assert decode_tag(encode_tag(tag)) == tag


@settings(max_examples=200, deadline=None)
@given(tags(), st.data())
def test_a_changed_tag_file_is_damaged_not_a_different_tag(tag, data):
    raw = bytearray(encode_tag(tag))
    at = data.draw(st.integers(0, len(raw) - 1))
    raw[at] ^= data.draw(st.integers(1, 255))
    with pytest.raises(TagDamaged):
        decode_tag(bytes(raw))
    with pytest.raises(TagDamaged):
        decode_tag(bytes(raw[:data.draw(st.integers(0, len(raw) - 1))]))
