"""Files on the farmer's disk that people keep across versions: the history file (a token per node)
and the identity file (an address's signed message), in the formats downstream-farmer 0.1.8 reads
and writes, and the one atomic way every farmer file is written.

History: ``{"last_node": <url>, "nodes": {<url>: {"token": <32 hex>, "address": <address>}}}``.
Identities: ``{<address>: {"message": <text>, "signature": <base64>}}``; an entry may also hold
``"nodes": {<url>: {"message", "signature"}}`` for nodes that accept only a message naming them
(the 0.1.8 client ignores the extra key).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any

import orjson

from downstream_tx import bitcoin


class FarmerFileError(Exception):
    """A file the farmer needs cannot be read or is not in its format (the message says which)."""


def atomic_write(path: str, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` by ``data`` all at once: a temporary file beside it, written and fsynced,
    renamed over it, and the directory fsynced. A crash leaves the old file or the new one, never
    a part of either; an error (a full disk) leaves the old file and no temporary one."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}-{os.urandom(4).hex()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_directory(directory)


def fsync_directory(directory: str) -> None:
    """Make a rename or a new file in ``directory`` durable (where the platform allows it)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_json_object(path: str) -> dict[str, Any]:
    """A JSON object from ``path``; ``{}`` when there is no such file (as 0.1.8's ``restore``)."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise FarmerFileError(f"Couldn't read '{path}': {e.strerror}") from None
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise FarmerFileError(f"Couldn't parse '{path}': {e}") from None
    if not isinstance(value, dict):
        raise FarmerFileError(f"Couldn't parse '{path}': expected a JSON object")
    return value


# --- the history file ------------------------------------------------------------------------------


class History:
    """The 2015 history file: the token and address the farmer used on each node, and the last node
    (used when no node is named). Tokens are secrets: the file is written with mode 0600."""

    def __init__(self, path: str, data: dict[str, Any] | None = None):
        self.path = path
        self.data = data if data is not None else {}

    @classmethod
    def load(cls, path: str) -> History:
        data = read_json_object(path)
        nodes = data.get("nodes", {})
        if not isinstance(nodes, dict) or not all(isinstance(v, dict) for v in nodes.values()):
            raise FarmerFileError(f"Couldn't parse '{path}': \"nodes\" must map node URLs to objects")
        return cls(path, data)

    @property
    def last_node(self) -> str | None:
        url = self.data.get("last_node")
        return url if isinstance(url, str) and url else None

    def entry(self, url: str) -> tuple[str | None, str | None]:
        """(token, address) saved for ``url``."""
        saved = self.data.get("nodes", {}).get(url, {})
        token, address = saved.get("token"), saved.get("address")
        return (token if isinstance(token, str) else None, address if isinstance(address, str) else None)

    def remember(self, url: str, token: str, address: str | None) -> None:
        self.data.setdefault("nodes", {})[url] = {"token": token, "address": address}
        self.data["last_node"] = url

    def save(self) -> None:
        atomic_write(self.path, orjson.dumps(self.data, option=orjson.OPT_INDENT_2), mode=0o600)


# --- the identity file -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SignedMessage:
    message: str
    signature: str


IDENTITY_FORMAT = (
    "The identity file {path} should be a JSON object like "
    '{{"<your SJCX address>": {{"message": "<your message>", "signature": "<base64 signature from your '
    'wallet>"}}}}, optionally with "nodes": {{"<node URL>": {{"message": ..., "signature": ...}}}} in an entry')


class Identities:
    """The 2015 identity file: per address, a message and its bitcoin signature that prove the
    farmer owns the address; optionally one such pair per node (a node that accepts only a
    message naming it)."""

    def __init__(self, path: str, data: dict[str, Any]):
        self.path = path
        self.data = data

    @classmethod
    def load(cls, path: str) -> Identities:
        data = read_json_object(path)
        for entry in data.values():
            if not isinstance(entry, dict):
                raise FarmerFileError(IDENTITY_FORMAT.format(path=path))
            pairs = [entry, *entry.get("nodes", {}).values()] if isinstance(entry.get("nodes", {}), dict) else None
            if pairs is None or not all(_is_pair(p) for p in pairs):
                raise FarmerFileError(IDENTITY_FORMAT.format(path=path))
        return cls(path, data)

    def first_address(self) -> str | None:
        return next(iter(self.data), None)

    def signed_message(self, address: str, node_url: str) -> SignedMessage | None:
        """The pair to send to ``node_url`` for ``address``: the node's own, else the address's,
        else None (no identity: the token is asked for without a signature)."""
        entry = self.data.get(address)
        if entry is None:
            return None
        pair = entry.get("nodes", {}).get(node_url, entry)
        return SignedMessage(pair["message"], pair["signature"])


def _is_pair(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("message"), str) \
        and isinstance(value.get("signature"), str)


def check_signature(address: str, signed: SignedMessage) -> str | None:
    """Why ``signed`` does not prove ``address`` (checked before it is sent, as 0.1.8 did), or None."""
    try:
        ok = bitcoin.verify_message(address, signed.message, signed.signature)
    except bitcoin.InvalidAddress as e:
        return f"{address} is not a valid SJCX address ({e})"
    if not ok:
        return ("the signature provided does not match the address being used; check the message, the "
                "signature and the SJCX address")
    return None
