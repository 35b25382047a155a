"""The contracts a farmer holds with one node, in memory and on disk.

Each node has a directory of its own under the data directory (see :func:`node_directory`) with
one ``state.json`` (every contract's small record, replaced atomically) and each contract's files:
``<name>.chunk`` (the data), ``<name>.tag`` (v1: the tag), ``<name>.part`` (v0: a download under
way). What memory holds per contract is a few hundred bytes: tags stay on disk and a proof lives
only until it is sent, so memory grows with the number of contracts, not with the bytes stored.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import orjson

from .chunks import remove_files
from .files import FarmerFileError, atomic_write, read_json_object

STATE_FILE = "state.json"
STATE_VERSION = 1
_SAFE = re.compile(r"^[0-9A-Za-z_.-]{1,64}$")
#: what a contract record keeps on disk (the rest is the session's bookkeeping)
SAVED = ("protocol", "id", "size", "challenge", "due_at", "answered", "stored", "problem", "passed", "failed",
         "seed", "tag", "url", "interval", "added", "given_back")
#: v0 files given back that are remembered (not taken again when the node offers them)
DECLINED_KEPT = 1000


def node_directory(data_dir: str, url: str) -> str:
    """``<data_dir>/<host>_<port>-<8 hex>``: readable, and distinct for every node URL."""
    parts = urlsplit(url)
    host = re.sub(r"[^0-9A-Za-z.-]", "_", parts.hostname or "node")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return os.path.join(data_dir, f"{host}_{port}-{hashlib.sha256(url.encode()).hexdigest()[:8]}")


@dataclass(slots=True, eq=False)
class Contract:
    """One contract. ``challenge`` is the current one (v1: the challenge dict; v0: 64 hex) and
    ``due_at`` its deadline (Unix seconds); ``answered``: the node has a valid answer to it;
    ``stored``: the data is on disk and was checked; ``problem``: why the data cannot back an
    answer (the farmer then sends none for it)."""

    protocol: str
    id: Any
    size: int
    challenge: Any
    due_at: float
    answered: bool = False
    stored: bool = False
    problem: str | None = None
    passed: int = 0
    failed: int = 0
    seed: str | None = None  # v1: the RandomIO seed of the data
    tag: dict[str, Any] | None = None  # v1: the node's tag until its file is written
    url: str | None = None  # v0: where the data is downloaded from, as the node gave it
    interval: int | None = None  # v0: seconds between challenges
    added: float = 0.0
    given_back: bool = False  # v0: being given back with /remove (asked again after a restart)
    #: the session's own, never saved: work under way for this contract
    busy: bool = field(default=False, compare=False)

    @property
    def key(self) -> tuple[str, Any]:
        return (self.protocol, self.id)

    @property
    def name(self) -> str:
        text = str(self.id)
        if not _SAFE.match(text):
            text = hashlib.sha256(orjson.dumps(self.id)).hexdigest()[:32]
        return f"{self.protocol}-{text}"

    def record(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in SAVED}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Contract:
        return cls(**{k: record[k] for k in SAVED if k in record})


class ContractBook:
    """The contracts held with one node (both protocols), keyed by (protocol, id)."""

    def __init__(self, directory: str, url: str):
        self.directory = directory
        self.url = url
        self.farmer_id: str | None = None
        self.contracts: dict[tuple[str, Any], Contract] = {}
        #: v0 files given back (the newest ``DECLINED_KEPT``): not taken again
        self.declined: dict[str, None] = {}

    def decline(self, file_hash: str) -> None:
        self.declined[file_hash] = None
        while len(self.declined) > DECLINED_KEPT:
            del self.declined[next(iter(self.declined))]

    def path(self, contract: Contract, suffix: str) -> str:
        return os.path.join(self.directory, contract.name + suffix)

    def add(self, contract: Contract) -> None:
        self.contracts[contract.key] = contract

    def get(self, protocol: str, cid: Any) -> Contract | None:
        try:
            return self.contracts.get((protocol, cid))
        except TypeError:  # an unhashable id sent by a node: not one of ours
            return None

    def remove(self, contract: Contract) -> None:
        """Forget ``contract`` and delete its files (blocking, but only ``unlink`` calls)."""
        self.contracts.pop(contract.key, None)
        remove_files(*(self.path(contract, s) for s in (".chunk", ".tag", ".part")))

    def of(self, protocol: str) -> Iterator[Contract]:
        return (c for c in self.contracts.values() if c.protocol == protocol)

    def __len__(self) -> int:
        return len(self.contracts)

    def held_bytes(self, protocol: str | None = None) -> int:
        return sum(c.size for c in self.contracts.values() if protocol is None or c.protocol == protocol)

    # --- on disk

    def snapshot(self) -> bytes:
        """The state file's bytes (one record at a time: no list of every record's dict)."""
        head = orjson.dumps({"version": STATE_VERSION, "url": self.url, "farmer_id": self.farmer_id,
                             "declined": list(self.declined)})
        body = b",".join(orjson.dumps(c.record()) for c in self.contracts.values())
        return head[:-1] + b',"contracts":[' + body + b"]}"

    def save(self, snapshot: bytes | None = None) -> None:
        """Write ``snapshot`` (default: now's) atomically (blocking: call it off the reactor)."""
        atomic_write(os.path.join(self.directory, STATE_FILE), snapshot if snapshot is not None else self.snapshot())

    def load(self) -> None:
        path = os.path.join(self.directory, STATE_FILE)
        data = read_json_object(path)
        if not data:
            return
        if data.get("version") != STATE_VERSION or not isinstance(data.get("contracts"), list):
            raise FarmerFileError(f"Couldn't parse '{path}': not a state file of this farmer (version "
                                  f"{data.get('version')!r})")
        try:
            contracts = [Contract.from_record(r) for r in data["contracts"]]
        except (TypeError, KeyError) as e:
            raise FarmerFileError(f"Couldn't parse '{path}': {e}") from None
        self.farmer_id = data.get("farmer_id")
        self.contracts = {c.key: c for c in contracts}
        self.declined = dict.fromkeys(h for h in data.get("declined", []) if isinstance(h, str))
