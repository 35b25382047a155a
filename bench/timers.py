"""Timer tick cost against database size.

Fills a fresh database with N active v0 contracts (1% of them due now), then times one pass of
the challenge timer (``contracts.update_due_txn``, the set-based SQL the daemon runs every tick)
for each size. The tick should grow with the due work, not with N.

Usage: python bench/timers.py [--sizes 10000,100000,1000000] [--due 0.01] [--mysql URL] [--quick]
(--mysql defaults to $DOWNSTREAM_TEST_MYSQL_URL; the database is dropped and re-created.)
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from downstream_tx.db import contracts, schema  # noqa: E402
from downstream_tx.db.database import Txn  # noqa: E402
from downstream_tx.db.engine import create_engine  # noqa: E402

FILES = 100
NOW = 1_700_000_000.0


def fresh(url: str):
    engine = create_engine(url)
    if engine.name == "mysql":
        import pymysql

        u = engine.url
        conn = pymysql.connect(host=u.host, port=u.port, user=u.user, password=u.password)
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{u.database}`")
            cur.execute(f"CREATE DATABASE `{u.database}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
        conn.close()
    conn = engine.connect()
    cur = conn.cursor()
    txn = Txn(cur, engine)
    schema.upgrade_txn(txn, schema.load_steps(engine.name))
    conn.commit()
    return engine, conn, txn


def fill(conn, txn: Txn, n: int, due_fraction: float, now: float = NOW) -> int:
    due = max(1, int(n * due_fraction))
    txn.execute("INSERT INTO tokens (token_hash, farmer_id, address, created) VALUES (?, 'f', 'a', 0)",
                (os.urandom(32),))
    token_id = txn.lastrowid
    txn.executemany(
        "INSERT INTO files (file_hash, kind, size, redundancy, interval_s, replicas, added) "
        "VALUES (?, 'stored', 1000, ?, 60, ?, 0)",
        [(os.urandom(32).hex(), n, n // FILES) for _ in range(FILES)],
    )
    file_ids = [r[0] for r in txn.execute("SELECT id FROM files ORDER BY id").fetchall()]
    txn.execute("INSERT INTO challenge_batches (file_id, root_seed, merkle_root, count, created) "
                "VALUES (?, ?, ?, 0, 0)", (file_ids[0], b"r" * 32, b"m" * 32))
    batch_id = txn.lastrowid
    per_file = due // FILES + 2
    txn.executemany(
        "INSERT INTO challenges (batch_id, file_id, seq, seed, answer) VALUES (?, ?, ?, ?, ?)",
        [(batch_id, f, i, os.urandom(32), "0" * 64) for f in file_ids for i in range(per_file)],
    )
    page = 50_000
    for start in range(0, n, page):
        rows = []
        for i in range(start, min(n, start + page)):
            deadline = now - 1 if i % int(1 / due_fraction) == 0 and i // int(1 / due_fraction) < due \
                else now + 30 + (i % 30)
            rows.append((token_id, file_ids[(i + i // FILES) % FILES], 0, "active", now - 60, 60, 0, 0, deadline, 1))
        # placeholders only, so PyMySQL sends one multi-row INSERT
        txn.executemany(
            "INSERT INTO contracts (token_id, file_id, protocol, state, start, interval_s, seq, issued, deadline, "
            "answered) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        conn.commit()
    if txn.engine_name == "sqlite":
        txn.execute("ANALYZE")
    conn.commit()
    return due


def measure(url: str, n: int, due_fraction: float) -> tuple[int, float, float]:
    engine, conn, txn = fresh(url)
    started = time.perf_counter()
    due = fill(conn, txn, n, due_fraction)
    fill_time = time.perf_counter() - started
    started = time.perf_counter()
    result = contracts.update_due_txn(txn, NOW, max_failures=3, limit=max(due, 5000))
    conn.commit()
    tick = time.perf_counter() - started
    assert result.issued == due, (result, due)
    conn.close()
    return due, tick, fill_time


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--due", type=float, default=0.01)
    parser.add_argument("--mysql", default=os.environ.get("DOWNSTREAM_TEST_MYSQL_URL"))
    parser.add_argument("--quick", action="store_true", help="tiny sizes (for the test suite)")
    args = parser.parse_args(argv)
    sizes = [1000, 2000] if args.quick else [int(s) for s in args.sizes.split(",")]
    targets = [("sqlite", None)] + ([("mysql", args.mysql)] if args.mysql else [])
    print(f"timer tick: {args.due:.0%} of N active v0 contracts due, {FILES} files")
    print(f"{'engine':8} {'contracts':>10} {'due':>8} {'tick s':>8} {'per due ms':>10} {'fill s':>8}")
    for name, url in targets:
        for n in sizes:
            with tempfile.TemporaryDirectory() as tmp:
                target = url or "sqlite:///" + os.path.join(tmp, "bench.db")
                due, tick, fill_time = measure(target, n, args.due)
            print(f"{name:8} {n:>10} {due:>8} {tick:>8.3f} {tick / due * 1000:>10.3f} {fill_time:>8.1f}")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
