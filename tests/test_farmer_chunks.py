"""The farmer's chunk files and answers: byte for byte the proofs of the 2015 libraries' vectors
(tests/vectors), and no answer from bytes the farmer cannot back."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from pathlib import Path

import pytest

from downstream_tx.farmer.chunks import (
    ChunkDamaged,
    ChunkLost,
    answer_stored,
    finish_download,
    prove_seeded,
    write_seeded,
)
from downstream_tx.heartbeat import RandomIO

VECTORS = json.loads((Path(__file__).parent / "vectors" / "heartbeat-merkle.json").read_text())


def _write(tmp_path, case):
    chunk, tag = str(tmp_path / "c.chunk"), str(tmp_path / "c.tag")
    write_seeded(chunk, tag, case["file_seed"], case["file_size"], case["tag"])
    return chunk, tag


@pytest.mark.parametrize("case", VECTORS["cases"], ids=lambda c: f"{c['file_size']}b-n{c['n']}-{c['check_fraction']}")
def test_the_farmer_writes_and_proves_as_the_2015_libraries_did(tmp_path, case):
    chunk, tag = _write(tmp_path, case)
    assert hashlib.sha256(Path(chunk).read_bytes()).hexdigest() == case["file_sha256"]
    for step in case["challenges"]:
        assert prove_seeded(chunk, tag, step["challenge"], case["file_size"]) == step["proof"]


def _big_case():
    return next(c for c in VECTORS["cases"] if c["file_size"] == 100000 and c["n"] == 256)


def test_a_deleted_chunk_or_tag_is_lost(tmp_path):
    case = _big_case()
    chunk, tag = _write(tmp_path, case)
    challenge = case["challenges"][0]["challenge"]
    os.unlink(chunk)
    with pytest.raises(ChunkLost, match="chunk file is missing"):
        prove_seeded(chunk, tag, challenge, case["file_size"])
    chunk, tag = _write(tmp_path, case)
    os.unlink(tag)
    with pytest.raises(ChunkLost, match="tag file is missing"):
        prove_seeded(chunk, tag, challenge, case["file_size"])


def test_damaged_bytes_under_the_challenge_give_no_proof(tmp_path):
    case = _big_case()
    chunk, tag = _write(tmp_path, case)
    step = case["challenges"][1]
    data = bytearray(Path(chunk).read_bytes())
    # flip every byte: whatever window the challenge names is damaged
    Path(chunk).write_bytes(bytes(b ^ 0xFF for b in data))
    with pytest.raises(ChunkDamaged, match="do not match the contract's tag"):
        prove_seeded(chunk, tag, step["challenge"], case["file_size"])
    Path(chunk).write_bytes(bytes(data[:-1]))
    with pytest.raises(ChunkDamaged, match="bytes, not"):
        prove_seeded(chunk, tag, step["challenge"], case["file_size"])
    Path(chunk).write_bytes(bytes(data))
    raw = bytearray(Path(tag).read_bytes())
    raw[40] ^= 1
    Path(tag).write_bytes(bytes(raw))
    with pytest.raises(ChunkDamaged, match="checksum"):
        prove_seeded(chunk, tag, step["challenge"], case["file_size"])


def test_a_tag_for_another_size_is_refused_and_nothing_is_left(tmp_path):
    case = _big_case()
    with pytest.raises(ChunkDamaged):
        write_seeded(str(tmp_path / "c.chunk"), str(tmp_path / "c.tag"), case["file_seed"], 99, case["tag"])
    assert os.listdir(tmp_path) == []


def test_a_full_disk_leaves_no_partial_chunk(tmp_path, monkeypatch):
    case = _big_case()

    def full(self, size, path=""):
        Path(path).write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(RandomIO, "genfile", full)
    with pytest.raises(OSError) as caught:
        write_seeded(str(tmp_path / "c.chunk"), str(tmp_path / "c.tag"), case["file_seed"], 100000, case["tag"])
    assert caught.value.errno == 28
    assert os.listdir(tmp_path) == []


def test_v0_answer_over_the_stored_bytes_after_checking_the_file_hash(tmp_path):
    data = os.urandom(300_000)
    path = tmp_path / "c.chunk"
    path.write_bytes(data)
    file_hash = hashlib.sha256(data).hexdigest()
    challenge = os.urandom(32).hex()
    expected = hmac.new(bytes.fromhex(challenge), data, hashlib.sha256).hexdigest()
    assert answer_stored(str(path), challenge, file_hash, len(data)) == expected
    path.write_bytes(data[:1000] + bytes([data[1000] ^ 1]) + data[1001:])
    with pytest.raises(ChunkDamaged, match="no longer its file hash"):
        answer_stored(str(path), challenge, file_hash, len(data))
    path.write_bytes(data[:-1])
    with pytest.raises(ChunkDamaged, match="bytes, not"):
        answer_stored(str(path), challenge, file_hash, len(data))
    path.unlink()
    with pytest.raises(ChunkLost):
        answer_stored(str(path), challenge, file_hash, len(data))


def test_a_download_is_kept_only_when_it_is_the_chunk_named(tmp_path):
    data = os.urandom(5000)
    part, final = tmp_path / "c.part", tmp_path / "c.chunk"
    part.write_bytes(data)
    finish_download(str(part), str(final), hashlib.sha256(data).hexdigest(), len(data))
    assert final.read_bytes() == data and not part.exists()
    part.write_bytes(data)
    with pytest.raises(ChunkDamaged):
        finish_download(str(part), str(final), "00" * 32, len(data))
    assert not part.exists()
