"""A farmer that behaves like ``downstream-farmer`` 0.1.8 (spec protocol-v1 Part B §1-§2), for the
end-to-end tests: plain urllib, one thread, the client's parsing and dropping rules.

Only the client's fixed delays are scaled (``margin`` for its 5 s response margin and update
window, ``retry`` for its 3 s retry, ``empty_wait`` for its 30 s wait on an empty chunk list) so a
test with a 3 s interval runs in seconds; every rule that decides what the client accepts, keeps
or drops is the client's.
"""

from __future__ import annotations

import binascii
import hashlib
import json
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from downstream_tx.heartbeat import Challenge, FileReader, Merkle, RandomIO, Tag

REQUIRED_CHUNK_KEYS = ("seed", "size", "file_hash", "challenge", "tag", "due")


class DownstreamError(Exception):
    pass


class FatalError(Exception):
    """What makes the real client exit."""


@dataclass
class Contract:
    file_hash: Any
    size: int
    path: str
    tag: Tag
    challenge: Challenge
    expiration: float
    answered: bool = False
    proof: dict | None = None
    submit_at: float = 0.0
    update_at: float | None = None
    heartbeats: int = 0


@dataclass
class Farmer:
    base: str
    address: str
    chunk_dir: str
    desired_total: int
    margin: float = 0.5
    retry: float = 0.5
    empty_wait: float = 0.2
    token: str | None = None
    heartbeat: Merkle | None = None
    contracts: dict[Any, Contract] = field(default_factory=dict)
    dropped: list[tuple[Any, str]] = field(default_factory=list)
    heartbeats: int = 0
    log: list[str] = field(default_factory=list)
    onboard_rate: float = 2_000_000
    avg_interval: float = 60

    # --- transport --------------------------------------------------------------------------------

    def _request(self, method: str, route: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
        url = f"{self.base}/api/downstream/v1/{route}"
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return self._handle(resp.status, resp.read())
        except urllib.error.HTTPError as e:
            return self._handle(e.code, e.read())

    @staticmethod
    def _handle(status: int, raw: bytes) -> Any:
        """``utils.handle_json_response``."""
        if status != 200:
            try:
                message = json.loads(raw)["message"]
            except (ValueError, KeyError, TypeError):
                if status >= 400:
                    raise urllib.error.HTTPError("", status, "error", None, None) from None
            else:
                raise DownstreamError(message)
        return json.loads(raw)  # ValueError for a 200 that is not JSON

    # --- the client's steps -------------------------------------------------------------------------

    def probe(self) -> None:
        """``load_url_and_check``: a plain GET of the base URL must succeed."""
        try:
            urllib.request.urlopen(self.base, timeout=5).read()
        except urllib.error.URLError:
            raise FatalError("Could not connect to server.") from None

    def connect(self) -> None:
        if self.token is not None:
            try:
                resp = self._request("GET", f"heartbeat/{self.token}")
            except DownstreamError as e:
                if f"Unable to connect: {e}" != "Unable to connect: Nonexistent token.":
                    raise FatalError(f"Unable to connect: {e}") from None
                self.token = None
        if self.token is None:
            try:
                resp = self._request("GET", f"new/{self.address}")
            except DownstreamError as e:
                raise FatalError(f"Unable to connect: {e}") from None
        for key in ("token", "heartbeat", "type"):
            if key not in resp:
                raise FatalError("Malformed response from server.")
        if resp["type"] not in ("Merkle", "Swizzle"):
            raise FatalError("Unknown Heartbeat Type")
        self.token = resp["token"]
        binascii.unhexlify(self.token)
        self.heartbeat = Merkle.from_dict(resp["heartbeat"])
        self.farmer_id = hashlib.sha256(binascii.unhexlify(self.token)).hexdigest()[:20]

    def held_total(self) -> int:
        return sum(c.size for c in self.contracts.values())

    def chunk_request_size(self) -> int:
        return int(min(self.desired_total - self.held_total(),
                       int(self.onboard_rate * (self.avg_interval - 5) * 0.5)))

    def get_contracts(self) -> int:
        """``_get_contracts`` (retry=True): one /chunk request; returns the chunks received."""
        size = self.chunk_request_size()
        if size <= 0:
            return 0
        try:
            resp = self._request("GET", f"chunk/{self.token}/{size}")
            chunks = resp["chunks"]
        except (DownstreamError, urllib.error.HTTPError, ValueError, KeyError) as e:
            self.log.append(f"chunk retry: {e}")
            return 0
        if sum(chunk["size"] for chunk in chunks) > size:
            raise FatalError("Server sent too much chunk data")
        for chunk in chunks:
            for key in REQUIRED_CHUNK_KEYS:
                chunk[key]  # noqa: B018 - a missing key raises KeyError and kills the real client
            path = os.path.join(self.chunk_dir, str(chunk["file_hash"]))
            RandomIO(chunk["seed"]).genfile(chunk["size"], path)
            contract = Contract(chunk["file_hash"], chunk["size"], path, Tag.from_dict(chunk["tag"]),
                                Challenge.from_dict(chunk["challenge"]), time.time() + int(chunk["due"]))
            self.contracts[contract.file_hash] = contract
            self._prove(contract)
        return len(chunks)

    def _prove(self, contract: Contract) -> None:
        with FileReader(contract.path) as reader:
            proof = self.heartbeat.prove(reader, contract.challenge, contract.tag)
        contract.proof = proof.to_dict()
        contract.answered = False
        contract.submit_at = time.time() + self.margin
        contract.update_at = None

    def _drop(self, file_hash: Any, why: str) -> None:
        contract = self.contracts.pop(file_hash, None)
        if contract is not None:
            self.dropped.append((file_hash, why))
            try:
                os.unlink(contract.path)
            except OSError:
                pass

    def submit(self) -> None:
        """``_submit``: batched proofs, sent with the bogus ``Content-Encoding: gzip`` header."""
        now = time.time()
        ready = [c for c in self.contracts.values()
                 if c.proof is not None and not c.answered and c.submit_at <= now]
        batch = [c for c in ready if c.expiration > now + self.margin]
        for c in ready:
            if c not in batch:
                self._drop(c.file_hash, "no time left to submit")
        if not batch:
            return
        body = {"proofs": [{"file_hash": c.file_hash, "proof": c.proof} for c in batch]}
        try:
            resp = self._request("POST", f"answer/{self.token}", body, {"Content-Encoding": "gzip"})
            report = resp["report"]
            if not isinstance(report, list):
                raise DownstreamError("report is not a list")
        except (DownstreamError, urllib.error.HTTPError, ValueError, KeyError) as e:
            for c in batch:
                if c.expiration > time.time() + self.retry:
                    c.submit_at = time.time() + self.retry
                else:
                    self._drop(c.file_hash, f"answer failed: {e}")
            return
        sent = {c.file_hash: c for c in batch}
        for entry in report:
            fh = entry.get("file_hash")
            if fh not in sent or type(fh) is not type(sent[fh].file_hash):
                continue
            if "error" in entry or entry.get("status") != "ok":
                self._drop(fh, f"report: {entry}")
                continue
            c = sent[fh]
            c.heartbeats += 1
            self.heartbeats += 1
            c.answered = True
            c.proof = None
            c.update_at = c.expiration  # ready at its expiration

    def update(self) -> None:
        """``_update``: a batched challenge refresh of the contracts whose due time has passed."""
        now = time.time()
        batch = [c for c in self.contracts.values() if c.update_at is not None and c.update_at <= now]
        if not batch:
            return
        try:
            resp = self._request("POST", f"challenge/{self.token}", {"hashes": [c.file_hash for c in batch]})
            entries = resp["challenges"]
            for entry in entries:
                entry["file_hash"]  # noqa: B018 - an entry without file_hash: the batch is retried
        except (DownstreamError, urllib.error.HTTPError, ValueError, KeyError) as e:
            self.log.append(f"update retry: {e}")
            for c in batch:
                c.update_at = time.time() + self.retry
            return
        for entry in entries:
            c = self.contracts.get(entry["file_hash"])
            if c is None:
                continue
            if "error" in entry or "status" in entry:
                self._drop(c.file_hash, f"challenge: {entry}")
                continue
            if entry["answered"]:
                c.update_at = time.time() + self.retry  # asked too early
                continue
            c.challenge = Challenge.from_dict(entry["challenge"])
            c.expiration = time.time() + int(entry["due"])
            self._prove(c)

    def run(self, heartbeats_each: int, timeout: float, min_contracts: int) -> None:
        """Farm until every contract has ``heartbeats_each`` heartbeats (bounded by ``timeout``)."""
        deadline = time.time() + timeout
        next_chunk = 0.0
        while time.time() < deadline:
            if self.held_total() < self.desired_total and time.time() >= next_chunk:
                if self.get_contracts() == 0:
                    next_chunk = time.time() + self.empty_wait
            self.submit()
            self.update()
            if (len(self.contracts) >= min_contracts
                    and all(c.heartbeats >= heartbeats_each for c in self.contracts.values())):
                return
            time.sleep(0.05)  # the farmer's own pacing; the node runs in another process
        raise AssertionError(f"timed out: {[(c.file_hash, c.heartbeats) for c in self.contracts.values()]} "
                             f"dropped={self.dropped} log={self.log[-5:]}")
