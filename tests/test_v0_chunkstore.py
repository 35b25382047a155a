"""v0.chunkstore.ChunkStore directly, on a temporary directory: ingest then commit or discard,
export (decrypting), path_for, delete, the encryption round trip, a source shorter than announced."""

from __future__ import annotations

import hashlib
import io
import os
import stat

import pytest

from downstream_tx.v0.chunkstore import ChunkStore


@pytest.fixture
def store(tmp_path):
    s = ChunkStore(str(tmp_path / "chunks"))
    s.ensure()
    return s


def ingest(store, data: bytes, encrypt: bool):
    seen = []
    got = store.ingest(io.BytesIO(data), len(data), encrypt, progress=lambda done, size: seen.append((done, size)))
    return got, seen


def test_plain_ingest_commit_export_delete(store):
    data = os.urandom(3 * 1024 * 1024 + 5)
    got, seen = ingest(store, data, encrypt=False)
    digest = hashlib.sha256(data).hexdigest()
    assert (got.file_hash, got.original_hash, got.size, got.enc_key) == (digest, digest, len(data), None)
    assert seen[-1] == (len(data), len(data)) and [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert os.path.dirname(got.tmp_path) == store.root and not store.exists(digest)
    path = store.commit(got)
    assert path == store.path_for(digest) == os.path.join(store.root, digest[:2], digest)
    assert store.exists(digest) and not os.path.exists(got.tmp_path)
    out = io.BytesIO()
    assert store.export(digest, None, out) == len(data) and out.getvalue() == data
    store.delete(digest)
    assert not store.exists(digest)
    store.delete(digest)  # already gone: fine


def test_encryption_round_trip(store):
    data = b"the same bytes" * 1000
    a, _ = ingest(store, data, encrypt=True)
    b, _ = ingest(store, data, encrypt=True)
    assert len(a.enc_key) == 48 and a.enc_key != b.enc_key
    assert a.original_hash == b.original_hash == hashlib.sha256(data).hexdigest()
    assert a.file_hash != a.original_hash and a.file_hash != b.file_hash  # other key, other stored bytes
    store.commit(a)
    with open(store.path_for(a.file_hash), "rb") as f:
        stored = f.read()
    assert stored != data and len(stored) == len(data) and hashlib.sha256(stored).hexdigest() == a.file_hash
    out = io.BytesIO()
    assert store.export(a.file_hash, a.enc_key, out) == len(data) and out.getvalue() == data
    store.discard(b)
    assert not os.path.exists(b.tmp_path)
    store.discard(b)  # twice: fine


def test_a_source_shorter_than_announced(store):
    got, seen = ingest_short(store)
    assert got.size == 100 and seen[-1] == (100, 1000)
    assert got.file_hash == hashlib.sha256(b"x" * 100).hexdigest()


def ingest_short(store):
    seen = []
    got = store.ingest(io.BytesIO(b"x" * 100), 1000, False, progress=lambda done, size: seen.append((done, size)))
    return got, seen


def test_a_failing_source_leaves_no_temporary_file(store):
    class Broken(io.RawIOBase):
        def read(self, n=-1):
            raise OSError("disk gone")

    with pytest.raises(OSError):
        store.ingest(Broken(), 10, True)
    assert [n for n in os.listdir(store.root) if n.startswith(".ingest-")] == []


def test_path_for_refuses_what_is_not_a_hash(store):
    for bad in ("", "../" + "a" * 61, "A" * 64 + "/", "z" * 64, "a" * 63):
        with pytest.raises(ValueError):
            store.path_for(bad)
    assert store.path_for("ab" * 32).endswith(os.path.join("ab", "ab" * 32))


def test_the_store_is_private(store):
    assert stat.S_IMODE(os.stat(store.root).st_mode) == 0o700
