"""The hex strings of protocol v0: file hashes and hash responses (64 hex characters each)."""

from __future__ import annotations

import re

from downstream_tx.errors import INVALID, NodeError

HEX64_RE = re.compile(r"^[0-9a-fA-F]{64}$")


def is_hex64(text: object) -> bool:
    return isinstance(text, str) and HEX64_RE.match(text) is not None


def parse_file_hash(file_hash: str) -> str:
    if not is_hex64(file_hash):
        raise NodeError(INVALID, "invalid_hash", "file hash must be 64 hexadecimal characters")
    return file_hash.lower()


def parse_response(response: str) -> str:
    if not is_hex64(response):
        raise NodeError(INVALID, "invalid_response", "response must be 64 hexadecimal characters")
    return response.lower()
