"""End to end: the real daemon (``twistd -n downstream``), ``downstream-admin`` as a subprocess, and
farmers written with treq, on SQLite and on MariaDB.

Every wait is bounded polling of the HTTP API (every 0.1 s), never a fixed sleep for a timer. The
farmers' requests and responses are written to ``transcript-<engine>.txt`` in the test's directory,
printed (``pytest -s``), and copied into ``$DOWNSTREAM_E2E_TRANSCRIPT_DIR`` when that is set.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import pytest_twisted
import treq
from twisted.internet import task

from support import make_address
from support.daemon import Daemon, daemon_env

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ADMIN = [sys.executable, "-c", "from downstream_tx.admin import entry; entry()"]
INTERVAL = 2
MAX_FAILURES = 3
POLL = 0.1


class Transcript:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.t0 = time.monotonic()

    def add(self, who: str, text: str) -> None:
        self.lines.append(f"[{time.monotonic() - self.t0:6.2f}s] {who:9} {text}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


class Admin:
    def __init__(self, db_args: list[str], transcript: Transcript):
        self.db_args = db_args
        self.transcript = transcript

    def __call__(self, *args: str) -> str:
        shown = " ".join(a if len(a) != 32 else a[:8] + "…" for a in args)
        done = subprocess.run(ADMIN + self.db_args + list(args), env=daemon_env(), capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, done.stderr
        self.transcript.add("admin", f"$ downstream-admin {shown}\n{'':20}→ {done.stdout.strip()}")
        return done.stdout.strip()


class Farmer:
    """A v0 farmer: one token, the chunks it downloaded, honest (or not) answers."""

    def __init__(self, name: str, base: str, transcript: Transcript, reactor: Any):
        self.name = name
        self.base = base
        self.transcript = transcript
        self.reactor = reactor
        self.token = ""
        self.data: dict[str, bytes] = {}

    async def call(self, method: str, path: str, expect: int | None = 200, quiet: bool = False,
                   headers: dict | None = None) -> tuple[int, Any]:
        response = await treq.request(method, self.base + path, headers=headers, persistent=False)
        body = await response.content()
        ctype = (response.headers.getRawHeaders("content-type") or [""])[0]
        shown_path = path.replace(self.token, self.token[:8] + "…") if self.token else path
        shown_path = re.sub(r"(cap=[0-9]+\.[0-9a-f]{8})[0-9a-f]+", r"\1…", shown_path)  # a capability, too
        if ctype == "application/json":
            value: Any = orjson.loads(body)
            shown = body.decode()
        else:
            value = body
            shown = f"<{len(body)} bytes {ctype}, sha256 {hashlib.sha256(body).hexdigest()[:16]}…>"
        if not quiet:
            self.transcript.add(self.name, f"{method} {shown_path}" + (f"  {headers}" if headers else ""))
            self.transcript.add("", f"← {response.code} {shown}")
        if expect is not None:
            assert response.code == expect, (method, path, response.code, body[:300])
        return response.code, value

    async def new(self, address: str) -> str:
        _, body = await self.call("GET", f"/api/downstream/new/{address}")
        self.token = body["token"]
        return self.token

    async def chunk(self, expect: int = 200) -> dict:
        return (await self.call("GET", f"/api/downstream/chunk/{self.token}", expect=expect))[1]

    async def download(self, url: str, file_hash: str) -> bytes:
        assert url.startswith(self.base + "/api/download/")
        code, data = await self.call("GET", url[len(self.base):])
        assert hashlib.sha256(data).hexdigest() == file_hash
        self.data[file_hash] = data
        return data

    async def due(self, quiet: bool = False, expect: int = 200) -> dict:
        return (await self.call("GET", f"/api/downstream/due/{self.token}", quiet=quiet, expect=expect))[1]

    async def answer(self, file_hash: str, challenge: str, right: bool = True, expect: int = 200) -> Any:
        response = hmac.new(bytes.fromhex(challenge), self.data[file_hash], hashlib.sha256).hexdigest() \
            if right else "0" * 64
        return (await self.call("GET", f"/api/downstream/challenge/{self.token}/{file_hash}/{response}",
                                expect=expect))[1]

    async def poll_due(self, until, timeout: float, what: str) -> dict:
        """Poll /due every 0.1 s until ``until(body)``; logs the first and the matching reply."""
        deadline = time.monotonic() + timeout
        polls = 0
        while True:
            body = await self.due(quiet=True)
            polls += 1
            if until(body):
                self.transcript.add(self.name, f"GET /api/downstream/due/{self.token[:8]}…  (polled {polls}× "
                                               f"until {what})")
                self.transcript.add("", f"← 200 {orjson.dumps(body).decode()}")
                return body
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: not {what} within {timeout}s; last /due: {body}")
            await task.deferLater(self.reactor, POLL, lambda: None)


def head_content_length(port: int, path: str) -> tuple[int, str | None]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("HEAD", path)
        r = conn.getresponse()
        r.read()
        return r.status, r.getheader("Content-Length")
    finally:
        conn.close()


@pytest_twisted.ensureDeferred
async def test_farmer_session_end_to_end(tmp_path: Path, db_url: str, request):
    from twisted.internet import reactor

    engine = "mysql" if db_url.startswith("mysql") else "sqlite"
    transcript = Transcript()
    data_dir = tmp_path / "data"
    db_args = ["--data-dir", str(data_dir), "--db", db_url]
    admin = Admin(db_args, transcript)
    chunk_path = tmp_path / "chunk.bin"
    chunk_path.write_bytes(os.urandom(256 * 1024 + 123))

    # containment off: the misses below count at once (tests/test_reputation.py covers containment)
    daemon = Daemon(tmp_path / "daemon", db_args + ["--tick", "0.1", "--max-failures", str(MAX_FAILURES),
                                                    "--challenge-batch", "10", "--challenge-low-water", "4",
                                                    "--containment-retries", "0"])
    daemon.start()
    try:
        transcript.add("daemon", f"twistd -n downstream --tick 0.1 --max-failures {MAX_FAILURES} ({engine}) "
                                 f"listening on {daemon.url}")
        file_hash = admin("file", "add", str(chunk_path), "--redundancy", "1", "--interval", str(INTERVAL))

        # -- farmer A: token, contract, download --------------------------------------------------
        a = Farmer("farmer A", daemon.url, transcript, reactor)
        await a.new(make_address(1))
        contract = await a.chunk()
        size = 256 * 1024 + 123
        assert contract == {"url": contract["url"], "file_hash": file_hash, "challenge": contract["challenge"],
                            "interval": INTERVAL, "size": size, "due": INTERVAL}
        # the seed's path, the contract's capability in the query string
        assert re.fullmatch(rf"{daemon.url}/api/download/{file_hash}\?cap=[0-9]+\.[0-9a-f]{{32}}", contract["url"])
        download = contract["url"].removeprefix(daemon.url)
        assert head_content_length(daemon.port, download) == (200, str(size))
        assert head_content_length(daemon.port, f"/api/download/{file_hash}")[0] == 404  # no capability
        # the download is interrupted after 100,000 bytes and resumed with a Range
        _, first = await a.call("GET", download, expect=206, headers={"Range": "bytes=0-99999"})
        _, rest = await a.call("GET", download, expect=206, headers={"Range": "bytes=100000-"})
        data = a.data[file_hash] = first + rest
        assert hashlib.sha256(data).hexdigest() == file_hash

        # -- correct answers over several intervals; /due shows exactly the outstanding challenge --
        answered: set[str] = set()
        challenge = contract["challenge"]
        for _ in range(3):
            body = await a.poll_due(
                lambda b: bool(b["due_contracts"]) and b["due_contracts"][0]["challenge"] not in answered,
                timeout=3 * INTERVAL, what="a new challenge is due")
            assert body["all_contracts"] == [{"hash": file_hash}]
            assert len(body["due_contracts"]) == 1
            outstanding = body["due_contracts"][0]
            assert outstanding["hash"] == file_hash and 0 <= outstanding["due"] <= INTERVAL
            challenge = outstanding["challenge"]
            assert await a.answer(file_hash, challenge) == {"status": "pass"}
            answered.add(challenge)
            assert (await a.due())["due_contracts"] == []

        # -- the contract passed: its URL serves no more (a farmer keeps the bytes it was given) --------
        assert (await a.call("GET", download, expect=403))[1]["status"] == "download_closed"
        shown = orjson.loads(admin("farmer", "show", a.token, "--json"))["contracts"]
        assert (shown["downloads"], shown["redownloads"], shown["downloads_refused"]) == (2, 0, 1)

        # -- a wrong answer is a fail, and there is one attempt per challenge ---------------------------
        body = await a.poll_due(lambda b: bool(b["due_contracts"]) and b["due_contracts"][0]["challenge"]
                                not in answered, timeout=3 * INTERVAL, what="a new challenge is due")
        challenge = body["due_contracts"][0]["challenge"]
        assert await a.answer(file_hash, challenge, right=False) == {"status": "fail"}
        assert (await a.answer(file_hash, challenge, expect=409))["status"] == "not_due"

        # -- the file is full: a second farmer gets nothing yet -----------------------------------------
        b = Farmer("farmer B", daemon.url, transcript, reactor)
        await b.new(make_address(2))
        assert (await b.chunk(expect=404))["status"] == "no_chunks"

        # -- A stops answering: its contract fails after max_failures (1 fail + 2 misses) --------------
        await a.poll_due(lambda b: b["all_contracts"] == [], timeout=(MAX_FAILURES + 2) * INTERVAL,
                         what="the contract failed")

        # -- the file goes to B ---------------------------------------------------------------------------
        contract = await b.chunk()
        assert contract["file_hash"] == file_hash
        await b.download(contract["url"], file_hash)
        assert await b.answer(file_hash, contract["challenge"]) == {"status": "pass"}

        # -- remove ends B's contract; the slot is free again -------------------------------------------
        _, body = await b.call("GET", f"/api/downstream/remove/{b.token}/{file_hash}")
        assert body == {"status": "ok"}
        assert await b.due() == {"all_contracts": [], "due_contracts": []}

        # -- deleting a token (admin) frees its files --------------------------------------------------
        c = Farmer("farmer C", daemon.url, transcript, reactor)
        await c.new(make_address(3))
        assert (await c.chunk())["file_hash"] == file_hash
        assert (await b.chunk(expect=404))["status"] == "no_chunks"
        assert admin("token", "delete", c.token) == "token deleted; 1 contracts ended"
        assert (await c.due(expect=404))["status"] == "no_token"
        assert (await b.chunk())["file_hash"] == file_hash

        assert "Traceback" not in daemon.log()
    finally:
        status = daemon.stop()
        out = transcript.text()
        (tmp_path / f"transcript-{engine}.txt").write_text(out)
        target = os.environ.get("DOWNSTREAM_E2E_TRANSCRIPT_DIR")
        if target:
            Path(target).mkdir(parents=True, exist_ok=True)
            (Path(target) / f"transcript-{engine}.txt").write_text(out)
        print(f"\n--- farmer session transcript ({engine}) ---\n{out}")
    assert status == 0, daemon.log()
    log = daemon.log()
    assert "timer contracts:" in log and "contracts failed" in log
