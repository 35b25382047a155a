"""Database outage: MariaDB goes away for ~3 s under load and comes back.

The MariaDB server is shared (other tests run against it), so it is never stopped: the daemon
reaches it through a TCP proxy written here (``tests/tcp_proxy.py``). ``cut()`` closes every
proxied connection and refuses new ones — from the daemon's side exactly what a stopped server
looks like (lost connections, then "can't connect") — and ``restore()`` accepts again on the same
port, like the server starting again.

Checked: the daemon stays up; while the database is away it answers 503 JSON with Retry-After
within a bound (no hang, no 500); its timers survive (the contract timer's first pass after the
outage applies the downtime rule); it recovers on its own within 5 s of the database returning;
every answer acknowledged before, during or after the outage is recorded; nothing is corrupted and
no farmer is failed for the outage."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from downstream_tx.db.url import parse_db_url
from support import MYSQL_SKIP_REASON, MYSQL_URL, fresh_mysql_database, make_address, wait_until
from support.daemon import Daemon, daemon_env
from support.fault_load import DbView, V0Farmer, V1Farmer, assert_only_given_up_contracts_failed, http_get
from support.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.mysql]

ADMIN = [sys.executable, "-c", "from downstream_tx.admin import entry; entry()"]
OUTAGE = 3.0
INTERVAL = 3
#: the longest a request may take while the database is away (retries with back-off, no hang)
REQUEST_BOUND = 8.0


class Prober(threading.Thread):
    """GETs a database-backed route every 0.1 s and records (time, status, seconds, body, headers)."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url = url
        self.results: list[tuple[float, int, float, object, dict]] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            started = time.monotonic()
            try:
                code, body, headers = http_get(self.url, timeout=60)
            except OSError as e:
                code, body, headers = -1, repr(e), {}
            self.results.append((started, code, time.monotonic() - started, body, headers))
            time.sleep(0.1)


def test_database_outage_under_load(tmp_path: Path):
    if not MYSQL_URL:
        pytest.skip(MYSQL_SKIP_REASON)
    fresh_mysql_database(MYSQL_URL)
    real = parse_db_url(MYSQL_URL)
    proxy = TcpProxy(real.host, real.port).start()
    proxied = MYSQL_URL.replace(f"@{real.host}:{real.port}/", f"@127.0.0.1:{proxy.port}/")
    assert proxied != MYSQL_URL
    db_args = ["--data-dir", str(tmp_path / "data"), "--db", proxied]
    chunk = tmp_path / "chunk.bin"
    chunk.write_bytes(os.urandom(32 * 1024))
    done = subprocess.run(ADMIN + db_args + ["file", "add", str(chunk), "--redundancy", "3", "--interval",
                                             str(INTERVAL)], env=daemon_env(), capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    args = db_args + ["--tick", "0.1", "--seeded-interval", str(INTERVAL), "--seeded-pool", "4096:6",
                      "--seeded-challenges", "64", "--token-rate", "0", "--max-tokens-per-ip", "0",
                      "--challenge-batch", "40", "--challenge-low-water", "10", "--max-failures", "2"]
    node = Daemon(tmp_path / "node", args).start()
    v0 = [V0Farmer(f"v0-{i}", node.url, make_address(30 + i), files=1) for i in range(2)]
    (tmp_path / "v1").mkdir()
    v1 = [V1Farmer("v1-0", node.url, make_address(40), str(tmp_path / "v1"), 2 * 4096)]
    farmers = [*v0, *v1]
    prober = None
    try:
        for f in farmers:
            f.start()
        wait_until(lambda: all(f.passes >= 2 for f in v0) and all(f.heartbeats >= 2 for f in v1), 30, "farming")
        prober = Prober(f"{node.url}/api/downstream/due/{v0[0].token}")
        prober.start()
        wait_until(lambda: any(r[1] == 200 for r in prober.results), 10, "probing")
        before = {f.name: f.passes for f in v0} | {f.name: f.heartbeats for f in v1}

        proxy.cut()
        cut_at = time.monotonic()
        # the outage lasts until the daemon has been seen answering 503 and at least OUTAGE seconds passed
        wait_until(lambda: time.monotonic() - cut_at >= OUTAGE
                   and any(r[0] >= cut_at and r[1] == 503 for r in prober.results), OUTAGE + 10,
                   "answering 503 while the database is away")
        proxy.restore()
        restored_at = time.monotonic()
        restored_wall = time.time()
        wait_until(lambda: any(r[0] >= restored_at and r[1] == 200 for r in prober.results), 10,
                   "answering again after the outage")
        recovered = min(r[0] + r[2] for r in prober.results if r[0] >= restored_at and r[1] == 200) - restored_at
        # the timers survived: a pass after the outage notices it and applies the downtime rule
        node.wait_for_log(r"no timer run for [0-9.]+s", timeout=10)
        timer_back = time.monotonic() - restored_at
        wait_until(lambda: all(f.passes >= before[f.name] + 2 for f in v0)
                   and all(f.heartbeats >= before[f.name] + 2 for f in v1), 25, "farming after the outage")
        assert node.proc.poll() is None, "the daemon died"
    finally:
        if prober is not None:
            prober.stopping.set()
            prober.join(70)
        for f in farmers:
            f.stop()
        status = node.stop()
        proxy.close()
    assert status == 0, node.log()

    # requests that started while the database was away: 503 (or 200 when a retry reached the
    # database after its return), never anything else
    during = [r for r in prober.results if cut_at <= r[0] < restored_at]
    codes = sorted({r[1] for r in during})
    slowest = max(r[2] for r in prober.results)
    print(f"\noutage: {len(during)} requests started during the outage answered {codes}; slowest request "
          f"{slowest:.2f}s; answering 200 again {recovered:.2f}s after the database returned; timer pass "
          f"{timer_back:.2f}s after; farmer errors {[dict(f.errors) for f in farmers]} statuses "
          f"{[dict(f.statuses) for f in v0]}")
    assert set(codes) <= {200, 503}, [(r[1], r[3]) for r in during if r[1] not in (200, 503)][:3]
    assert codes.count(503) == 1, "no 503 while the database was away"
    for _, code, _, body, headers in during:
        if code == 503:
            assert body == {"status": "unavailable", "message": "the database is unavailable, try again soon"}
            assert headers.get("Retry-After") == "5"
    assert slowest < REQUEST_BOUND
    assert recovered < 5.0
    assert all(500 not in f.statuses for f in v0)

    db = DbView(MYSQL_URL)  # directly, not through the proxy
    recorded = db.passes_by_token_file()
    for f in v0:
        token_hash = hashlib.sha256(bytes.fromhex(f.token)).digest()
        for file_hash, acked in f.acked.items():
            assert acked <= recorded[(token_hash, file_hash)] <= acked + 1, (f.name, file_hash)
    for f in v1:
        assert f.heartbeats <= db.hbcount(f.token) <= f.heartbeats + 2
    assert db.consistency_problems() == []
    assert db.v0_contracts_missed_or_failed() == 0
    assert_only_given_up_contracts_failed(db, v1, restored_wall)
    assert "Unhandled error" not in node.log()
