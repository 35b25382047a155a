"""The hex strings of protocol v0: file hashes and hash responses (64 hex characters each)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from downstream_tx.errors import INVALID, NodeError

HEX64_RE = re.compile(r"[0-9a-fA-F]{64}")


def is_hex64(text: object) -> bool:
    return isinstance(text, str) and HEX64_RE.fullmatch(text) is not None


@dataclass(frozen=True, slots=True)
class FileHash:
    """A file hash checked once (by the route's converter, or :func:`parse_file_hash`): 64
    lowercase hexadecimal characters."""

    hex: str


def invalid_hash() -> NodeError:
    return NodeError(INVALID, "invalid_hash", "file hash must be 64 hexadecimal characters")


def as_file_hash(value: FileHash | str) -> FileHash | None:
    """``value`` as a :class:`FileHash` (a FileHash is taken as it is), or None if it is not one."""
    if isinstance(value, FileHash):
        return value
    return FileHash(value.lower()) if is_hex64(value) else None


def parse_file_hash(value: FileHash | str) -> str:
    """The hex of a file hash given typed or as text (400 ``invalid_hash`` if it is not one)."""
    checked = as_file_hash(value)
    if checked is None:
        raise invalid_hash()
    return checked.hex


@dataclass(frozen=True, slots=True)
class Response:
    """A well-formed hash response: 64 lowercase hexadecimal characters."""

    hex: str


@dataclass(frozen=True, slots=True)
class Malformed:
    """A hash response that is not 64 hexadecimal characters. It is not refused where it is parsed:
    the farming service refuses it and counts it against the farmer of a live token."""


MALFORMED = Malformed()


def parse_response(text: str) -> Response | Malformed:
    """What a farmer sent as its answer, parsed once (by the route's converter)."""
    return Response(text.lower()) if is_hex64(text) else MALFORMED


def malformed_response() -> NodeError:
    return NodeError(INVALID, "invalid_response", "hash response must be 64 hexadecimal characters")
