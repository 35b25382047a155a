"""Connections killed at random under v0 and v1 load (MariaDB): what every farmer was told is what
the database holds.

The daemon runs against the test's MariaDB database; a killer thread sends ``KILL <id>`` for one of
the daemon's connections every 0.25 s (one in COMMIT when it finds one, else any), so transactions
die before, during and after their COMMIT. v0 and v1 "churners" go through every farmer call that
writes, a new farmer each time, recording every answer; a v0 farmer and the 0.1.8 v1 client farm
alongside. Afterwards every answer is held against the rows: no 500; the tokens of an address are
exactly those its farmers were given; a token's contracts exactly those it was told about; a
pass or a heartbeat recorded exactly when one was reported; a contract ended exactly when its
removal was acknowledged. A request whose answer never reached the client (its side failed) may
have gone either way and is allowed for.

Before the lost-commit rule (``Database.run``) this failed: a /new whose acknowledgement was lost
answered 500 with its token committed, an answer recorded as a pass was told 409 ``not_due``, a
/chunk made a second contract it did not report."""

from __future__ import annotations

import hashlib
import itertools
import os
import random
import re
import threading
import urllib.request
from collections import Counter
from pathlib import Path

import pymysql
import pytest

from downstream_tx.db.url import parse_db_url
from support import MYSQL_SKIP_REASON, MYSQL_URL, fresh_mysql_database, make_address, wait_until
from support.admin import cli
from support.daemon import Daemon
from support.fault_load import DbView, V0Churner, V0Farmer, V1Churner, V1Farmer

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.mysql]

INTERVAL = 4
KILL_EVERY = 0.25
KILLS = 100


class Killer(threading.Thread):
    """``KILL`` one of the daemon's connections to ``database`` every ``every`` seconds: one running
    COMMIT if there is one at that moment, else one at random."""

    def __init__(self, url: str, every: float, seed: int):
        super().__init__(daemon=True)
        self.url = parse_db_url(url)
        self.every = every
        self.random = random.Random(seed)
        self.kills = 0
        self.in_commit = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        p = self.url
        conn = pymysql.connect(host=p.host, port=p.port, user=p.user, password=p.password, database=p.database,
                               autocommit=True)
        try:
            with conn.cursor() as cursor:
                while not self.stopping.wait(self.every):
                    victim = None
                    for _ in range(20):  # look for a COMMIT for a little while
                        cursor.execute("SELECT ID, INFO FROM information_schema.PROCESSLIST WHERE DB = %s "
                                       "AND ID <> CONNECTION_ID() AND COMMAND <> 'Killed'", (p.database,))
                        rows = cursor.fetchall()
                        committing = [i for i, info in rows if (info or "").upper().startswith("COMMIT")]
                        if committing:
                            victim = self.random.choice(committing)
                            self.in_commit += 1
                            break
                        if rows:
                            victim = self.random.choice(rows)[0]
                    if victim is None:
                        continue
                    try:
                        cursor.execute(f"KILL {int(victim)}")
                        self.kills += 1
                    except pymysql.err.OperationalError:  # gone already
                        pass
        finally:
            conn.close()


def test_connections_killed_under_load_never_make_an_answer_differ_from_the_database(tmp_path: Path):
    if not MYSQL_URL:
        pytest.skip(MYSQL_SKIP_REASON)
    fresh_mysql_database(MYSQL_URL)
    db_args = ["--data-dir", str(tmp_path / "data"), "--db", MYSQL_URL]
    for n in range(3):
        chunk = tmp_path / f"chunk{n}.bin"
        chunk.write_bytes(os.urandom(16 * 1024))
        done = cli(tmp_path, "file", "add", str(chunk), "--redundancy", "4", "--interval", str(INTERVAL), db=MYSQL_URL)
        assert done.returncode == 0, done.stderr
    args = db_args + ["--tick", "0.2", "--seeded-interval", str(INTERVAL), "--seeded-pool", "4096:8",
                      "--seeded-challenges", "64", "--token-rate", "0", "--max-tokens-per-ip", "0",
                      "--challenge-batch", "40", "--challenge-low-water", "10", "--db-pool-size", "3",
                      "--late-grace", "0", "--metrics-listen", "tcp:0:interface=127.0.0.1"]
    node = Daemon(tmp_path / "node", args).start()
    addresses = (make_address(n) for n in itertools.count(1000))
    lock = threading.Lock()

    def fresh():
        while True:
            with lock:
                address = next(addresses)
            yield address

    v0 = [V0Churner(f"v0-churn-{i}", node.url, fresh()) for i in range(2)]
    v1 = [V1Churner("v1-churn", node.url, fresh(), 4096)]
    (tmp_path / "v1").mkdir()
    farmers = [V0Farmer("v0-farmer", node.url, make_address(40), files=1),
               V1Farmer("v1-farmer", node.url, make_address(41), str(tmp_path / "v1"), 2 * 4096)]
    threads = [*v0, *v1, *farmers]
    killer = Killer(MYSQL_URL, KILL_EVERY, seed=int.from_bytes(os.urandom(4), "big"))
    try:
        for t in threads:
            t.start()
        wait_until(lambda: all(len(c.told.of("new", 200)) >= 1 for c in v0) and farmers[0].passes >= 1
                   and farmers[1].heartbeats >= 1, 60, "farming")
        killer.start()
        wait_until(lambda: killer.kills >= KILLS, KILLS * KILL_EVERY * 4 + 30, f"{KILLS} kills")
        killer.stopping.set()
        killer.join(10)
        for t in threads:
            t.stop()
        assert node.proc.poll() is None, "the daemon died"
        with urllib.request.urlopen(node.metrics_url, timeout=10) as r:
            metrics = r.read().decode()
    finally:
        killer.stopping.set()
        for t in threads:
            t.stopping.set()
        status = node.stop()
    log = node.log()
    assert status == 0, log

    db = DbView(MYSQL_URL)
    lost = len(re.findall(r"the acknowledgement of its commit was lost", log))
    committed = len(re.findall(r"its commit had happened", log))
    codes = sum((c.told.codes() for c in [*v0, *v1]), start=Counter())
    print(f"\nkills: {killer.kills} ({killer.in_commit} in COMMIT); commits whose acknowledgement was lost: {lost} "
          f"({committed} had committed); churn answers {dict(codes)}; farmer statuses "
          f"{dict(farmers[0].statuses)}; client-side errors {[dict(t.errors) for t in threads]}")

    # no 500, anywhere
    assert codes[500] == 0 and farmers[0].statuses[500] == 0, [a for c in v0 + v1 for a in c.told.answers
                                                                 if a[2] == 500][:3]

    def token_hash(token: str) -> bytes:
        return hashlib.sha256(bytes.fromhex(token)).digest()

    problems: list[str] = []
    # tokens: those of an address are exactly those given out for it
    for churner, new in [*((c, "new") for c in v0), *((c, "v1 new") for c in v1)]:
        given: dict[str, set[bytes]] = {}
        for address, body in churner.told.of(new):
            given.setdefault(address, set())
            if isinstance(body, dict) and "token" in body:
                given[address].add(token_hash(body["token"]))
        unknown = churner.told.unknown_keys(new)
        for address, hashes in given.items():
            stored = {bytes(h) for h, in db.query("SELECT token_hash FROM tokens WHERE address = ?", (address,))}
            if stored != hashes and not (address in unknown and hashes <= stored and len(stored - hashes) == 1):
                problems.append(f"{new} {address}: {len(stored)} tokens stored, {len(hashes)} given")

    def contracts(token: str, protocol: int) -> list[tuple]:
        return [tuple(r) for r in db.query(
            "SELECT c.id, f.file_hash, c.state, c.passes, c.end_reason FROM contracts c JOIN tokens k "
            "ON k.id = c.token_id JOIN files f ON f.id = c.file_id WHERE k.token_hash = ? AND c.protocol = ? "
            "ORDER BY c.id", (token_hash(token), protocol))]

    # v0: contracts told ⇔ stored; a pass told ⇔ recorded; a removal acknowledged ⇔ ended
    for churner in v0:
        told = churner.told
        tokens = {body["token"] for _, body in told.of("new", 200)}
        for token in tokens:
            chunks = sorted(body["file_hash"] for t, body in told.of("chunk", 200) if t == token)
            stored = contracts(token, 0)
            if token in told.unknown_keys("chunk"):
                ok = set(chunks) <= {h for _, h, *_ in stored}
            else:
                ok = sorted(h for _, h, *_ in stored) == chunks
            if not ok:
                problems.append(f"v0 token {token[:8]}: told contracts {chunks}, stored {stored}")
            for _, file_hash, state, passes, reason in stored:
                key = (token, file_hash)
                told_passes = sum(1 for k, body in told.of("answer", 200) if k == key)
                unknown = key in told.unknown_keys("answer")
                if passes != told_passes and not (unknown and passes <= told_passes + 1):
                    problems.append(f"v0 contract {key}: {passes} passes recorded, {told_passes} told")
                removed = any(k == key for k, _ in told.of("remove", 200))
                if removed != (state == "ended" and reason == "removed") and key not in told.unknown_keys("remove"):
                    problems.append(f"v0 contract {key}: state {state} ({reason}), removal acknowledged: {removed}")

    # v1: contracts told ⇔ stored; heartbeats told ⇔ counted
    for churner in v1:
        told = churner.told
        for token in {body["token"] for _, body in told.of("v1 new", 200)}:
            chunks = sorted(c["file_hash"] for t, body in told.of("v1 chunk", 200) if t == token
                            for c in body["chunks"])
            stored = [cid for cid, *_ in contracts(token, 1)]
            if stored != chunks and not (token in told.unknown_keys("v1 chunk") and set(chunks) <= set(stored)):
                problems.append(f"v1 token {token[:8]}: told contracts {chunks}, stored {stored}")
            ok = sum(1 for (t, _), body in told.of("v1 answer", 200) if t == token
                     for entry in body["report"] if entry.get("status") == "ok")
            counted = db.hbcount(token)
            unknown = any(t == token for t, _ in told.unknown_keys("v1 answer"))
            if counted != ok and not (unknown and counted <= ok + 1):
                problems.append(f"v1 token {token[:8]}: {counted} heartbeats counted, {ok} reported")

    # the farmers alongside: a reply lost on the client's side is the only slack
    v0f, v1f = farmers
    recorded = db.passes_by_token_file()
    slack = sum(v0f.errors.values())
    for file_hash, acked in v0f.acked.items():
        stored = recorded[(token_hash(v0f.token), file_hash)]
        if not acked <= stored <= acked + slack:
            problems.append(f"v0 farmer {file_hash[:8]}: {stored} passes recorded, {acked} told")
    counted = db.hbcount(v1f.token)
    if not v1f.heartbeats <= counted <= v1f.heartbeats + 2 * sum(v1f.errors.values()):
        problems.append(f"v1 farmer: {counted} heartbeats counted, {v1f.heartbeats} reported")
    for farmer, address in ((v0f, v0f.address), (v1f, v1f.client.address)):
        stored = db.query("SELECT COUNT(*) FROM tokens WHERE address = ?", (address,))[0][0]
        if stored != 1 and not farmer.errors:
            problems.append(f"{farmer.name}: {stored} tokens stored, 1 given")

    assert problems == [], problems
    scraped = {m.group(1): float(m.group(2)) for m in re.finditer(
        r'^downstream_db_lost_commits_total\{outcome="(\w+)"\} (\S+)$', metrics, re.M)}
    assert scraped["committed"] == committed and scraped["unknown"] == 0
    assert db.consistency_problems() == []
    assert "Unhandled error" not in log
