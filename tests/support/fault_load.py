"""Load for the fault-injection tests: v0 and v1 farmers in threads that keep farming through
errors (a dead daemon, 503s), record every answer the node acknowledged, and can be pointed at a
restarted daemon; plus read-only inspection of the node's database (SQLite or MySQL)."""

from __future__ import annotations

import hashlib
import hmac
import json
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from typing import Any

from downstream_tx.db.url import parse_db_url
from support.farmer_v1 import DownstreamError, FatalError
from support.farmer_v1 import Farmer as V1Client

PACE = 0.05  # the farmers' own pacing between polls


def http_get(url: str, timeout: float = 10) -> tuple[int, Any, dict[str, str]]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, json.loads(r.read()), dict(r.headers)
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            body = json.loads(raw)
        except ValueError:
            body = raw
        return e.code, body, dict(e.headers)


class FarmerThread(threading.Thread):
    """Runs ``step()`` until stopped, counting errors by kind instead of dying on them."""

    def __init__(self, name: str):
        super().__init__(name=name, daemon=True)
        self.base = ""
        self.stopping = threading.Event()
        self.errors: Counter[str] = Counter()
        self.statuses: Counter[int] = Counter()
        self.lock = threading.Lock()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                self.step()
            except (urllib.error.URLError, OSError, DownstreamError, FatalError, ValueError, KeyError) as e:
                self.errors[type(e).__name__] += 1
            time.sleep(PACE)

    def step(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        self.stopping.set()
        self.join(15)
        assert not self.is_alive(), f"{self.name} did not stop"


class V0Farmer(FarmerThread):
    """A v0 farmer: a token, one contract per stored file, answers every due challenge honestly.
    ``acked[file_hash]`` counts the answers the node replied ``pass`` to."""

    def __init__(self, name: str, base: str, address: str, files: int):
        super().__init__(name)
        self.base = base
        self.address = address
        self.files = files
        self.token = ""
        self.data: dict[str, bytes] = {}
        self.acked: Counter[str] = Counter()
        self.answered: set[str] = set()

    def get(self, path: str) -> tuple[int, Any]:
        code, body, _ = http_get(self.base + path)
        with self.lock:
            self.statuses[code] += 1
        return code, body

    def step(self) -> None:
        if not self.token:
            code, body = self.get(f"/api/downstream/new/{self.address}")
            if code == 200:
                self.token = body["token"]
            return
        if len(self.data) < self.files:
            code, body = self.get(f"/api/downstream/chunk/{self.token}")
            if code == 200:
                with urllib.request.urlopen(body["url"].replace(body["url"].split("/api/")[0], self.base),
                                            timeout=10) as r:
                    self.data[body["file_hash"]] = r.read()
                self._answer(body["file_hash"], body["challenge"])
            return
        code, body = self.get(f"/api/downstream/due/{self.token}")
        if code != 200:
            return
        for due in body["due_contracts"]:
            if due["challenge"] not in self.answered:
                self._answer(due["hash"], due["challenge"])

    def _answer(self, file_hash: str, challenge: str) -> None:
        response = hmac.new(bytes.fromhex(challenge), self.data[file_hash], hashlib.sha256).hexdigest()
        code, body = self.get(f"/api/downstream/challenge/{self.token}/{file_hash}/{response}")
        if code == 200:
            assert body == {"status": "pass"}, body
            self.answered.add(challenge)
            with self.lock:
                self.acked[file_hash] += 1
        elif code == 409:  # already answered (a reply lost to the fault): nothing outstanding
            self.answered.add(challenge)

    @property
    def passes(self) -> int:
        with self.lock:
            return sum(self.acked.values())


class V1Farmer(FarmerThread):
    """The downstream-farmer 0.1.8 client's steps (tests/farmer_v1.py) in a loop; its
    ``heartbeats`` are the proofs the node reported ``ok``."""

    def __init__(self, name: str, base: str, address: str, chunk_dir: str, desired_total: int):
        super().__init__(name)
        self.client = V1Client(base, address, chunk_dir, desired_total, margin=0.3, retry=0.3, empty_wait=0.2)
        self.base = base
        self.in_flight = 0

    def step(self) -> None:
        c = self.client
        c.base = self.base
        if c.token is None:
            c.connect()
            return
        if c.held_total() < c.desired_total:
            c.get_contracts()
        self.in_flight = sum(1 for x in c.contracts.values() if x.proof is not None and not x.answered)
        c.submit()
        c.update()

    @property
    def token(self) -> str | None:
        return self.client.token

    @property
    def heartbeats(self) -> int:
        return self.client.heartbeats


class Told:
    """Every answer a load thread got, by call and key (an address, a token, a contract), to hold
    the database to afterwards; ``unknown``: the calls whose answer never arrived (the client's
    side failed), where the database may hold either outcome."""

    def __init__(self) -> None:
        self.answers: list[tuple[str, Any, int, Any]] = []
        self.unknown: list[tuple[str, Any]] = []
        self.lock = threading.Lock()

    def get(self, call: str, key: Any, url: str, data: Any = None) -> tuple[int, Any]:
        """GET ``url`` (POST with ``data``: JSON); the answer is recorded (the client's errors too)."""
        try:
            if data is None:
                code, body, _ = http_get(url)
            else:
                code, body = http_post(url, data)
        except OSError:
            with self.lock:
                self.unknown.append((call, key))
            raise
        with self.lock:
            self.answers.append((call, key, code, body))
        return code, body

    def of(self, call: str, code: int | None = None) -> list[tuple[Any, Any]]:
        """(key, body) of the answers to ``call`` (with status ``code``)."""
        with self.lock:
            return [(k, b) for c, k, s, b in self.answers if c == call and (code is None or s == code)]

    def codes(self) -> Counter[int]:
        with self.lock:
            return Counter(s for _, _, s, _ in self.answers)

    def unknown_keys(self, call: str) -> set:
        with self.lock:
            return {k for c, k in self.unknown if c == call}


def http_post(url: str, data: Any, timeout: float = 10) -> tuple[int, Any]:
    req = urllib.request.Request(url, data=json.dumps(data).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, json.loads(raw)
        except ValueError:
            return e.code, raw


class Churner(FarmerThread):
    """Farmers one after another, each with a token for a new address; every answer is in ``told``."""

    def __init__(self, name: str, base: str, addresses: Any):
        super().__init__(name)
        self.base = base
        self.addresses = addresses
        self.told = Told()
        self.token = ""

    def new_token(self, call: str, prefix: str) -> None:
        """``GET <prefix>/new/<a new address>``: the next farmer's token, when the node gives one."""
        address = next(self.addresses)
        code, body = self.told.get(call, address, f"{prefix}/new/{address}")
        if code == 200:
            self.token = body["token"]


class V0Churner(Churner):
    """v0 farmers through every call that writes: ``/new``, ``/chunk``, one answer, ``/remove``. A
    call answered 503 is made again (the same answer, the same contract)."""

    def __init__(self, name: str, base: str, addresses: Any):
        super().__init__(name, base, addresses)
        self.contract: tuple[str, bytes, str] | None = None  # file hash, data, challenge
        self.answered = False

    def step(self) -> None:
        told, v0 = self.told, f"{self.base}/api/downstream"
        if not self.token:
            self.new_token("new", v0)
            return
        if self.contract is None:
            code, body = told.get("chunk", self.token, f"{v0}/chunk/{self.token}")
            if code == 200:
                url = body["url"].replace(body["url"].split("/api/")[0], self.base)
                with urllib.request.urlopen(url, timeout=10) as r:
                    self.contract = (body["file_hash"], r.read(), body["challenge"])
                self.answered = False
            elif code == 404:  # no file needs another farmer now: the next farmer
                self.token = ""
            return
        file_hash, data, challenge = self.contract
        if not self.answered:
            response = hmac.new(bytes.fromhex(challenge), data, hashlib.sha256).hexdigest()
            code, _ = told.get("answer", (self.token, file_hash),
                               f"{v0}/challenge/{self.token}/{file_hash}/{response}")
            self.answered = code in (200, 409)
            return
        code, _ = told.get("remove", (self.token, file_hash), f"{v0}/remove/{self.token}/{file_hash}")
        if code in (200, 404):
            self.token, self.contract = "", None


class V1Churner(Churner):
    """v1 farmers through ``/new``, ``/chunk`` (one chunk of ``size`` bytes) and one answer to it."""

    def __init__(self, name: str, base: str, addresses: Any, size: int):
        super().__init__(name, base, addresses)
        self.size = size
        self.chunk: dict | None = None

    def step(self) -> None:
        from downstream_tx.heartbeat import Challenge, Merkle, RandomIO, Tag

        told, v1 = self.told, f"{self.base}/api/downstream/v1"
        if not self.token:
            self.new_token("v1 new", v1)
            return
        if self.chunk is None:
            code, body = told.get("v1 chunk", self.token, f"{v1}/chunk/{self.token}/{self.size}")
            if code == 200 and body["chunks"]:
                self.chunk = body["chunks"][0]
            elif code == 200:
                self.token = ""
            return
        chunk = self.chunk
        proof = Merkle(0.01, b"").prove(RandomIO(chunk["seed"], chunk["size"]), Challenge.from_dict(chunk["challenge"]),
                                        Tag.from_dict(chunk["tag"])).to_dict()
        code, _ = told.get("v1 answer", (self.token, chunk["file_hash"]), f"{v1}/answer/{self.token}",
                           {"proofs": [{"file_hash": chunk["file_hash"], "proof": proof}]})
        if code == 200:
            self.token, self.chunk = "", None


# --- the database, read directly ---------------------------------------------------------------------

class DbView:
    """Read-only queries on the node's database (``?`` placeholders), SQLite or MySQL.

    The one place the end-to-end tests read a daemon's database with SQL: the database belongs to
    another process (running, killed or cut off behind a proxy), and the invariants checked here
    (replicas against active contracts, challenges held twice, every stored byte) are not reads any
    store offers the node. In-process tests read state through the stores instead."""

    def __init__(self, url: str):
        self.url = url
        self.parsed = parse_db_url(url)

    def query(self, sql: str, args: tuple = ()) -> list[tuple]:
        if self.parsed.scheme == "sqlite":
            conn = sqlite3.connect(self.parsed.path, timeout=30)
            try:
                return conn.execute(sql, args).fetchall()
            finally:
                conn.close()
        import pymysql

        p = self.parsed
        conn = pymysql.connect(host=p.host, port=p.port, user=p.user, password=p.password, database=p.database)
        try:
            with conn.cursor() as cur:
                cur.execute(sql.replace("?", "%s"), args)
                return list(cur.fetchall())
        finally:
            conn.close()

    def tables(self) -> list[str]:
        if self.parsed.scheme == "sqlite":
            return [r[0] for r in self.query("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return [r[0] for r in self.query("SHOW TABLES")]

    def dump(self) -> bytes:
        """Every value of every table, as bytes (text UTF-8, numbers as text)."""
        out = []
        for table in self.tables():
            for row in self.query(f"SELECT * FROM {table}"):
                for value in row:
                    if isinstance(value, (bytes, bytearray, memoryview)):
                        out.append(bytes(value))
                    elif value is not None:
                        out.append(str(value).encode())
        return b"\n".join(out)

    def passes_by_token_file(self) -> dict[tuple[bytes, str], int]:
        rows = self.query("SELECT k.token_hash, f.file_hash, SUM(c.passes) FROM contracts c "
                          "JOIN tokens k ON k.id = c.token_id JOIN files f ON f.id = c.file_id "
                          "WHERE c.protocol = 0 GROUP BY k.token_hash, f.file_hash")
        return {(bytes(h), fh): int(n) for h, fh, n in rows}

    def v0_contracts_missed_or_failed(self) -> int:
        """v0 contracts with a miss or a fail counted."""
        return int(self.query("SELECT COUNT(*) FROM contracts WHERE protocol = 0 AND (misses > 0 OR fails > 0)")[0][0])

    def node_secret(self) -> bytes:
        return bytes(self.query("SELECT value FROM node_meta WHERE name = 'secret'")[0][0])

    def hbcount(self, token: str) -> int:
        token_hash = hashlib.sha256(bytes.fromhex(token)).digest()
        return int(self.query("SELECT hbcount FROM tokens WHERE token_hash = ?", (token_hash,))[0][0])

    def consistency_problems(self) -> list[str]:
        """What a corrupted state would show: replica counts that disagree with active contracts,
        a challenge held by two contracts or held but not marked used, a token with two active
        contracts on one file."""
        problems = []
        for file_id, replicas, active in self.query(
                "SELECT f.id, f.replicas, (SELECT COUNT(*) FROM contracts c WHERE c.file_id = f.id "
                "AND c.state = 'active') FROM files f"):
            if int(replicas) != int(active):
                problems.append(f"file {file_id}: replicas {replicas} but {active} active contracts")
        for challenge_id, n in self.query(
                "SELECT challenge_id, COUNT(*) FROM contracts WHERE challenge_id IS NOT NULL AND state = 'active' "
                "GROUP BY challenge_id HAVING COUNT(*) > 1"):
            problems.append(f"challenge {challenge_id} held by {n} contracts")
        for (n,) in self.query("SELECT COUNT(*) FROM contracts c JOIN challenges ch ON ch.id = c.challenge_id "
                               "WHERE c.state = 'active' AND ch.used = 0"):
            if n:
                problems.append(f"{n} active contracts hold a challenge not marked used")
        for token_id, file_id, n in self.query(
                "SELECT token_id, file_id, COUNT(*) FROM contracts WHERE state = 'active' "
                "GROUP BY token_id, file_id HAVING COUNT(*) > 1"):
            problems.append(f"token {token_id} holds {n} active contracts on file {file_id}")
        if self.parsed.scheme == "sqlite":
            (check,) = self.query("PRAGMA integrity_check")[0]
            if check != "ok":
                problems.append(f"integrity_check: {check}")
        return problems


def assert_only_given_up_contracts_failed(db: DbView, v1: list, back_at: float) -> None:
    """No contract failed for the node's own unavailability. The 0.1.8 client gives a contract up
    when an answer fails (a 503) too close to its own idea of the expiration; the node then fails
    it at its expiration — moved on by the downtime, so after the node's return — as it must fail
    any contract whose farmer stopped answering."""
    given_up = {fh for f in v1 for fh, _ in f.client.dropped}
    for cid, protocol, deadline, reason in db.query(
            "SELECT id, protocol, deadline, end_reason FROM contracts WHERE state = 'failed'"):
        assert protocol == 1 and cid in given_up and reason == "missed", (cid, protocol, reason, given_up)
        assert deadline > back_at, f"contract {cid} failed at {deadline}, before the node was back at {back_at}"
