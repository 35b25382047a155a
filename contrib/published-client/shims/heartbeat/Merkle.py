"""``heartbeat.Merkle`` as downstream-farmer 0.1.8 uses it, on top of downstream_tx.heartbeat.

Client calls (client.py / contract.py): ``Merkle.fromdict(resp["heartbeat"])``,
``hb.challenge_type().fromdict(d)``, ``hb.tag_type().fromdict(d)``,
``hb.prove(open_file, challenge, tag).todict()``.
"""

from __future__ import annotations

import os

from downstream_tx.heartbeat import merkle as _m

HeartbeatError = _m.HeartbeatError
DEFAULT_CHUNK_SIZE = _m.DEFAULT_CHUNKSZ


class _OldNames:
    def todict(self):
        return self.to_dict()

    @classmethod
    def fromdict(cls, d):
        return cls.from_dict(d)


class Challenge(_OldNames, _m.Challenge):
    pass


class Tag(_OldNames, _m.Tag):
    pass


class State(_OldNames, _m.State):
    pass


class Proof(_OldNames, _m.Proof):
    pass


class _FileObjectReader:
    """``read_at`` over a seekable binary file object (the client passes ``open(path, 'rb')``)."""

    def __init__(self, fh) -> None:
        self._fh = fh

    def read_at(self, offset: int, length: int) -> bytes:
        self._fh.seek(offset)
        return self._fh.read(length)

    def __len__(self) -> int:
        here = self._fh.tell()
        try:
            return self._fh.seek(0, os.SEEK_END)
        finally:
            self._fh.seek(here)


class Merkle(_OldNames, _m.Merkle):
    def prove(self, file, challenge, tag):
        reader = file if hasattr(file, "read_at") else _FileObjectReader(file)
        proof = super().prove(reader, challenge, tag)
        return Proof(proof.leaf, proof.branch)

    def get_public(self):
        return Merkle(self.check_fraction, b"")

    @staticmethod
    def challenge_type():
        return Challenge

    @staticmethod
    def tag_type():
        return Tag

    @staticmethod
    def state_type():
        return State

    @staticmethod
    def proof_type():
        return Proof
