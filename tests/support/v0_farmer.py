"""A v0 farmer driving the node's v0 functions directly (no HTTP: the API has its own tests): its
token, a chunk, the challenges it has outstanding, an answer (right or wrong, at a given arrival
time) and its newest contract row on a file. Tests that need more subclass it."""

from __future__ import annotations

from downstream_tx.v0.hashes import parse_response
from support import ADDRESS, contract_row, run, stored_bytes, v0_answer


class V0Farmer:
    def __init__(self, node, address: str = ADDRESS):
        self.node = node
        self.address = address
        self.token = run(node.v0.create_token(address))
        #: the challenge each chunk came with (``chunk``)
        self.challenges: dict[str, str] = {}

    def chunk(self) -> str:
        assigned = run(self.node.v0.get_chunk(self.token))
        self.challenges[assigned.file_hash] = assigned.challenge.hex()
        return assigned.file_hash

    def outstanding(self) -> dict[str, str]:
        _, due = run(self.node.v0.due(self.token))
        return {r["file_hash"]: r["challenge"].hex() for r in due}

    def answer(self, file_hash: str, challenge: str | None = None, arrived: float | None = None,
               right: bool = True) -> str:
        """Answer ``challenge`` (default: the file's outstanding one, read by ``/due`` now)."""
        challenge = challenge or self.outstanding()[file_hash]
        response = v0_answer(stored_bytes(self.node, file_hash), challenge) if right else "0" * 64
        return run(self.node.v0.answer(self.token, file_hash, parse_response(response), arrived))

    def state(self, file_hash: str) -> dict:
        return contract_row(self.node, self.token, file_hash)
