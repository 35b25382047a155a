"""End to end, the real daemon and v0 farmers over HTTP, on SQLite and on MariaDB: a farmer that fails
an audit is disqualified, every file it held reaches its redundancy target again on other farmers,
a new token for its address gets nothing, the well-behaved farmer is untouched; the operator
reinstates it. Every wait is bounded polling of the API or the admin command, never a sleep."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
import pytest_twisted
import treq
from twisted.internet import task

from support import make_address
from support.daemon import Daemon, daemon_env

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ADMIN = [sys.executable, "-c", "from downstream_tx.admin import entry; entry()"]
FILES = 3
REDUNDANCY = 2
INTERVAL = 600  # no challenge turns during the test: only the audit the bad farmer fails


class Farmer:
    def __init__(self, base: str, address: str):
        self.base = base
        self.address = address
        self.token = ""
        self.data: dict[str, bytes] = {}
        self.challenges: dict[str, str] = {}

    async def call(self, path: str, expect: int = 200) -> dict:
        response = await treq.get(self.base + path, persistent=False)
        body = await response.content()
        assert response.code == expect, (path, response.code, body[:300])
        return orjson.loads(body) if body[:1] == b"{" else {"bytes": body}

    async def new(self) -> Farmer:
        self.token = (await self.call(f"/api/downstream/new/{self.address}"))["token"]
        return self

    async def chunk(self, expect: int = 200) -> dict:
        body = await self.call(f"/api/downstream/chunk/{self.token}", expect)
        if expect == 200:
            data = (await self.call(body["url"][len(self.base):]))["bytes"]
            assert hashlib.sha256(data).hexdigest() == body["file_hash"]
            self.data[body["file_hash"]] = data
            self.challenges[body["file_hash"]] = body["challenge"]
        return body

    async def answer(self, file_hash: str, right: bool = True) -> dict:
        key = bytes.fromhex(self.challenges[file_hash])
        response = hmac.new(key, self.data[file_hash], hashlib.sha256).hexdigest() if right else "0" * 64
        return await self.call(f"/api/downstream/challenge/{self.token}/{file_hash}/{response}")


def admin(db_args: list[str], *args: str) -> str:
    done = subprocess.run(ADMIN + db_args + list(args), env=daemon_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


async def poll(reactor, check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not {what} within {timeout}s")
        await task.deferLater(reactor, 0.1, lambda: None)


@pytest_twisted.ensureDeferred
async def test_a_disqualified_farmers_files_reach_their_redundancy_on_other_farmers(tmp_path: Path, db_url: str):
    from twisted.internet import reactor

    db_args = ["--data-dir", str(tmp_path / "data"), "--db", db_url]
    hashes = []
    for i in range(FILES):
        path = tmp_path / f"chunk{i}.bin"
        path.write_bytes(os.urandom(8192 + i))
        hashes.append(admin(db_args, "file", "add", str(path), "--redundancy", str(REDUNDANCY), "--interval",
                            str(INTERVAL)).strip())
    # one failed audit disqualifies (a new farmer's score after one failure is 0.999)
    daemon = Daemon(tmp_path / "daemon", db_args + ["--tick", "0.1", "--dq-threshold", "0.9995",
                                                    "--max-tokens-per-ip", "0"])
    daemon.start()
    try:
        bad = await Farmer(daemon.url, make_address(1)).new()
        good = await Farmer(daemon.url, make_address(2)).new()
        spare = await Farmer(daemon.url, make_address(3)).new()
        for farmer in (bad, good):
            assert sorted([(await farmer.chunk())["file_hash"] for _ in range(FILES)]) == sorted(hashes)
        assert (await spare.chunk(expect=404))["status"] == "no_chunks"  # every file at its target

        def files() -> dict[str, int]:
            return {f["file_hash"]: f["replicas"] for f in json.loads(admin(db_args, "file", "list", "--json"))}

        def show(farmer: Farmer) -> dict:
            return json.loads(admin(db_args, "farmer", "show", farmer.token, "--json"))

        assert files() == {h: REDUNDANCY for h in hashes}
        assert await good.answer(hashes[0]) == {"status": "pass"}
        good_before = show(good)

        # the bad farmer fails an audit: disqualified at once, no new contract for any of its tokens
        assert await bad.answer(hashes[0], right=False) == {"status": "fail"}
        assert (await bad.chunk(expect=403))["status"] == "disqualified"
        again = await Farmer(daemon.url, bad.address).new()
        assert (await again.chunk(expect=403))["status"] == "disqualified"

        # the reputation job ends its contracts; the freed slots go to the spare farmer
        await poll(reactor, lambda: show(bad)["contracts"]["failed"] == FILES, 15, "the contracts ended")
        assert show(bad)["contracts"]["active"] == 0
        assert show(bad)["reputation"]["reputation"] == "disqualified"
        assert sorted([(await spare.chunk())["file_hash"] for _ in range(FILES)]) == sorted(hashes)
        assert files() == {h: REDUNDANCY for h in hashes}
        for h in hashes:
            assert await spare.answer(h) == {"status": "pass"}
        assert (await spare.chunk(expect=404))["status"] == "no_chunks"

        # the well-behaved farmer: nothing changed
        assert show(good) == good_before
        assert good_before["contracts"] == {"active": FILES, "ended": 0, "failed": 0, "passes": 1, "fails": 0,
                                            "misses": 0, "downloads": FILES, "redownloads": 0,
                                            "downloads_refused": 0}

        # the operator reinstates the farmer (its address): new contracts again when a slot is free
        assert admin(db_args, "farmer", "reinstate", bad.address) == f"farmer {bad.address} reinstated " \
                                                                      "(was disqualified)\n"
        assert (await again.chunk(expect=404))["status"] == "no_chunks"
        assert "Traceback" not in daemon.log()
    finally:
        status = daemon.stop()
    assert status == 0, daemon.log()
    log = daemon.log()
    assert f"farmer {make_address(1)} is disqualified (audit score below " in log  # the change, as it happens
    assert f"farmer {make_address(1)} (disqualified): {FILES} contracts ended" in log  # the reputation job's work
