"""Scale-out end to end (docs/operations.md, "Running several processes"): node instances on one
MariaDB under v0 and v1 farmer load spread over all of them; the leader SIGKILLed, then paused
(SIGSTOP past the lease TTL, SIGCONT); a rolling restart; ``--workers 2`` with SIGTERM while
requests are in flight. What must hold: no challenge issued twice, no acknowledged answer lost, no
file over its redundancy target, the pool never over-filled, no farmer failed for a gap in which no
instance ran the jobs, and a paused leader writes nothing once it lost its lease."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from support import MYSQL_URL, fresh_mysql_database, make_address, wait_until
from support.daemon import Daemon, daemon_env
from support.fault_load import DbView
from support.instances import Instances, SpreadV0Farmer, SpreadV1Farmer, UrlPool, health

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.mysql]

ADMIN = [sys.executable, "-c", "from downstream_tx.admin import entry; entry()"]
V0_INTERVAL = 3
V1_INTERVAL = 3
V1_CHUNK = 4096
POOL = 8
TTL = 1.5
TICK = 0.1
REDUNDANCY = 3


def admin(db_args: list[str], *args: str) -> str:
    done = subprocess.run(ADMIN + db_args + list(args), env=daemon_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture
def mysql_url():
    if not MYSQL_URL:
        pytest.skip("needs MySQL")
    fresh_mysql_database(MYSQL_URL)
    return MYSQL_URL


def node_args(tmp_path: Path, db_url: str, files: int = 2) -> list[str]:
    db_args = ["--data-dir", str(tmp_path / "data"), "--db", db_url]
    for n in range(files):
        chunk = tmp_path / f"chunk{n}.bin"
        chunk.write_bytes(os.urandom(64 * 1024))
        admin(db_args, "file", "add", str(chunk), "--redundancy", str(REDUNDANCY), "--interval", str(V0_INTERVAL))
    return db_args + ["--tick", str(TICK), "--lease-ttl", str(TTL), "--seeded-interval", str(V1_INTERVAL),
                      "--seeded-pool", f"{V1_CHUNK}:{POOL}", "--seeded-challenges", "64", "--token-rate", "0",
                      "--max-tokens-per-ip", "0", "--challenge-batch", "40", "--challenge-low-water", "10",
                      "--max-failures", "2"]


def farmers(tmp_path: Path, pool: UrlPool, v0: int = 3, v1: int = 2, files: int = 2):
    """``v0`` v0 farmers wanting ``files`` files each (3 × 2 = every replica slot of the two files,
    taken concurrently through different instances) and ``v1`` v1 farmers, every step to the next
    instance."""
    zero = [SpreadV0Farmer(f"v0-{i}", pool, make_address(10 + i), files=files) for i in range(v0)]
    one = []
    for i in range(v1):
        (tmp_path / f"v1-{i}").mkdir()
        one.append(SpreadV1Farmer(f"v1-{i}", pool, make_address(20 + i), str(tmp_path / f"v1-{i}"), 2 * V1_CHUNK))
    return zero, one


def progress(v0, v1, more: int = 2, timeout: float = 30, what: str = "farming"):
    """Wait until every v0 farmer holding contracts and every v1 farmer has ``more`` new answers acknowledged."""
    base0 = {f.name: f.passes for f in v0}
    base1 = {f.name: f.heartbeats for f in v1}
    wait_until(lambda: all(f.passes >= base0[f.name] + more for f in v0 if f.data)
               and all(f.heartbeats >= base1[f.name] + more for f in v1), timeout, what)


def check_database(db: DbView, v0, v1) -> None:
    """The invariants of every scale-out test."""
    assert db.consistency_problems() == []
    # no challenge issued to two contracts, ever (any state)
    assert db.query("SELECT challenge_id, COUNT(*) FROM contracts WHERE challenge_id IS NOT NULL "
                    "GROUP BY challenge_id HAVING COUNT(*) > 1") == []
    # no file over its redundancy target; the pool never over its target
    assert db.query("SELECT id FROM files WHERE kind = 'stored' AND replicas > redundancy") == []
    assert db.query("SELECT file_id, COUNT(*) FROM contracts WHERE state = 'active' AND protocol = 0 "
                    "GROUP BY file_id HAVING COUNT(*) > ?", (REDUNDANCY,)) == []
    assert all(n <= POOL for _, n in db.query("SELECT size, COUNT(*) FROM seeded_pool GROUP BY size"))
    # nothing acknowledged lost (at most the one answer in flight at a kill more)
    recorded = db.passes_by_token_file()
    for f in v0:
        if not f.token:
            continue
        token_hash = hashlib.sha256(bytes.fromhex(f.token)).digest()
        for file_hash, acked in f.acked.items():
            assert acked <= recorded[(token_hash, file_hash)] <= acked + 1, (f.name, file_hash)
    for f in v1:
        assert f.heartbeats <= db.hbcount(f.token), f.name
    # no farmer failed: no miss or failed contract on v0; v1 contracts fail only when the client
    # itself gave them up
    assert db.v0_contracts_missed_or_failed() == 0
    given_up = {fh for f in v1 for fh, _ in f.client.dropped}
    failed = db.query("SELECT id, protocol FROM contracts WHERE state = 'failed'")
    assert all(protocol == 1 and cid in given_up for cid, protocol in failed), (failed, given_up)


def test_three_instances_leader_killed_then_paused(tmp_path: Path, mysql_url: str):
    args = node_args(tmp_path, mysql_url)
    nodes = Instances(tmp_path, args, 3)
    pool = UrlPool(nodes.urls())
    v0, v1 = farmers(tmp_path, pool)
    everyone = [*v0, *v1]
    db = DbView(mysql_url)
    try:
        for f in everyone:
            f.start()
        wait_until(lambda: all(len(f.acked) == 2 and min(f.acked.values()) >= 2 for f in v0)
                   and all(f.heartbeats >= 4 for f in v1), 40, "farming on 3 instances")
        first, h1 = nodes.leader()
        # 1. the leader SIGKILLed under load: another instance holds the lease and runs the jobs
        pool.set([d.url for d in nodes.live() if d is not first])
        first.kill()
        killed_at = time.time()
        second, h2 = nodes.leader(newer_than=h1["lease"]["generation"])
        (acquired,) = db.query("SELECT acquired FROM leases WHERE name = 'jobs'")[0]
        takeover = float(acquired) - killed_at
        progress(v0, v1, what="farming after the leader was killed")
        # 2. the new leader paused past the TTL: the last instance takes over; resumed, the paused
        # one finds its lease lost and writes nothing
        third = next(d for d in nodes.live() if d is not second)
        pool.set([third.url])
        second.signal(signal.SIGSTOP)
        try:
            nodes.leader(among=[third], newer_than=h2["lease"]["generation"])
            time.sleep(TTL)  # paused well past the TTL (not a wait for an outcome)
        finally:
            mark = len(second.log())
            second.signal(signal.SIGCONT)
        second.wait_for_log(r"stops running the periodic jobs: (instance \S+ holds the lease now|its lease expired)")
        after = second.log()[mark:]
        progress(v0, v1, what="farming after the pause")
        assert health(second.url)["role"] == "follower"
        pool.set(nodes.urls())
        progress(v0, v1, what="farming on the two instances left")
    finally:
        # the nodes first: a farmer stopped while an instance still runs the jobs would miss
        statuses = nodes.stop_all()
        nodes.kill_all()
        for f in everyone:
            f.stop()
    print(f"\nscale-out: takeover {takeover:.2f}s after SIGKILL (lease_ttl {TTL}s, tick {TICK}s); acknowledged v0 "
          f"{[f.passes for f in v0]}, v1 {[f.heartbeats for f in v1]}")
    assert statuses == [0, 0]
    assert takeover <= TTL + TICK + 1.0  # within TTL + one tick; 1 s margin for a busy 2-core machine
    # the resumed leader completed no pass (a pass that changed something logs a summary)
    assert "timer contracts:" not in after
    assert "Traceback" not in "".join(d.log() for d in nodes.daemons)
    check_database(db, v0, v1)
    # the gap in which no instance ran the jobs was forgiven, nothing else was needed
    logs = "".join(d.log() for d in nodes.daemons)
    assert len(re.findall(r"runs the periodic jobs now", logs)) >= 3


def test_rolling_restart_drops_no_contract(tmp_path: Path, mysql_url: str):
    args = node_args(tmp_path, mysql_url)
    nodes = Instances(tmp_path, args, 3)
    pool = UrlPool(nodes.urls())
    v0, v1 = farmers(tmp_path, pool)
    everyone = [*v0, *v1]
    db = DbView(mysql_url)
    statuses = []
    try:
        for f in everyone:
            f.start()
        wait_until(lambda: all(len(f.acked) == 2 for f in v0) and all(f.heartbeats >= 2 for f in v1), 40,
                   "farming on 3 instances")
        for old in list(nodes.live()):
            pool.set([d.url for d in nodes.live() if d is not old])
            statuses.append(old.stop(30))
            new = nodes.start()
            pool.set(nodes.urls())
            assert health(new.url)["status"] == "ok"
            progress(v0, v1, more=1, what=f"farming after restarting {old.workdir.name}")
        progress(v0, v1, what="farming after the rolling restart")
    finally:
        statuses += nodes.stop_all()
        nodes.kill_all()
        for f in everyone:
            f.stop()
    assert statuses == [0] * 6
    check_database(db, v0, v1)
    assert db.query("SELECT COUNT(*) FROM contracts WHERE state <> 'active' AND protocol = 0")[0][0] == 0
    assert db.query("SELECT COUNT(*) FROM contracts WHERE state = 'failed'")[0][0] == 0


def _metric_ports(d: Daemon) -> list[int]:
    return [int(p) for p in re.findall(r"metrics at http://[0-9.]+:(\d+)/metrics", d.log())]


def _in_flight(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("downstream_http_requests_in_flight "):
                return float(line.split()[1])
    return 0.0


class _NotifySocket:
    """A unix datagram socket standing in for systemd's NOTIFY_SOCKET, read by a thread (the
    kernel queues only a few datagrams: net.unix.max_dgram_qlen)."""

    def __init__(self, path: str):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(0.1)
        self.messages: list[str] = []
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while not self.closed.is_set():
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except TimeoutError:
                continue

    def drain(self) -> list[str]:
        return list(self.messages)

    def close(self) -> None:
        self.closed.set()
        self.thread.join(5)
        self.sock.close()


def test_two_workers_serve_one_port_and_stop_cleanly_with_requests_in_flight(tmp_path: Path, mysql_url: str):
    args = node_args(tmp_path, mysql_url, files=1) + [
        "--workers", "2", "--metrics-listen", "tcp:0:interface=127.0.0.1", "--shutdown-timeout", "20"]
    notify = _NotifySocket(str(tmp_path / "notify.sock"))
    env = {"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "300000"}
    with Daemon(tmp_path / "workers", args, env=env, watchdog_self=True) as d:
        assert re.search(r"listening on 127\.0\.0\.1:\d+ \(2 workers, pids \d+ \d+;", d.log())
        # the parent's listener is named for what it is, not by an internal class name
        assert "downstream-tx listener shared by the workers starting on" in d.log() and "_NoAccept" not in d.log()
        # systemd hears READY once, after both workers are ready, then the workers' watchdog pings
        wait_until(lambda: notify.drain().count("WATCHDOG=1") >= 3, 20, "watchdog pings through the parent")
        assert notify.drain()[0] == "READY=1" and notify.drain().count("READY=1") == 1
        assert d.log().count(" serving 127.0.0.1:") == 2
        d.signal(signal.SIGHUP)  # reaches both workers
        d.wait_for_log(r"SIGHUP: log file reopened\n", count=2)
        d.wait_for_log(r"SIGHUP: log file reopened, passed to 2 workers")
        ports = _metric_ports(d)
        assert len(ports) == 2
        # both workers serve the one port, and one of them runs the jobs
        seen = {}
        wait_until(lambda: seen.update({h["instance"]: h["role"] for h in [health(d.url)] if h})
                   or sorted(seen.values()) == ["follower", "leader"], 20, "answers from both workers")
        assert sorted(seen.values()) == ["follower", "leader"]
        pool = UrlPool([d.url])
        v0, v1 = farmers(tmp_path, pool, v0=1, v1=1, files=1)
        for f in [*v0, *v1]:
            f.start()
        progress(v0, v1, what="farming on 2 workers")
        # requests in flight on both workers (bodies half sent), then SIGTERM to the parent
        clients = []
        for _ in range(6):
            c = socket.create_connection(("127.0.0.1", d.port), timeout=20)
            c.sendall(b"GET / HTTP/1.1\r\nHost: node\r\nContent-Length: 10\r\nConnection: close\r\n\r\n12345")
            clients.append(c)
        wait_until(lambda: sum(_in_flight(p) for p in ports) >= 6, 20, "6 requests in flight")
        busy = sum(1 for p in ports if _in_flight(p) > 0)
        d.signal(signal.SIGTERM)
        d.wait_for_log(r"stopping: waiting for \d+ requests in flight", count=2)
        for c in clients:
            c.sendall(b"67890")
        answers = []
        for c in clients:
            response = b""
            while chunk := c.recv(65536):
                response += chunk
            c.close()
            answers.append(response.split(b"\r\n", 1)[0])
        d.proc.wait(30)
        assert d.proc.returncode == 0, d.log()
        for f in [*v0, *v1]:
            f.stop()
    wait_until(lambda: "STOPPING=1" in notify.drain(), 5, "STOPPING=1")
    notify.close()
    significant = [m for m in notify.messages if m != "WATCHDOG=1"]
    assert significant[0] == "READY=1" and significant[-1] == "STOPPING=1" and len(significant) == 4, significant
    assert answers == [b"HTTP/1.1 200 OK"] * 6
    log = d.log()
    assert log.count("stopped (status 0)") == 2 and "still in flight" not in log and "Traceback" not in log
    print(f"\nworkers: requests in flight on {busy} of 2 workers at SIGTERM")
    check_database(DbView(mysql_url), v0, v1)
