"""The thread hop against the query: what a short SQLite transaction (a token lookup and a
one-row update, the shape of a v0 answer) costs the node when it goes through the adbapi pool
(``Database.run``: runInteraction → pool thread → callFromThread) and when it runs inline on the
reactor thread (``Database.run_short``), next to the same statements on a bare connection.

CPU is the whole process's (all threads), per transaction, transactions run one after another.

Usage: python bench/thread_hop.py [--count 5000] [--quick]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TOKEN = bytes(range(32))


def body(txn, token_hash: bytes) -> int:
    from downstream_tx.db.tokens import lookup_txn

    row = lookup_txn(txn, token_hash)
    txn.execute("UPDATE tokens SET hbcount = hbcount + 1 WHERE id = ?", (row.id,))
    return row.id


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=5000)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    count = 200 if args.quick else args.count

    from twisted.internet import defer, task

    from downstream_tx.db import schema
    from downstream_tx.db.database import Database, Txn
    from downstream_tx.db.engine import create_engine

    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="dtx-hop-") as tmp:
        path = os.path.join(tmp, "hop.db")
        engine = create_engine(f"sqlite:///{path}")

        async def measure(reactor) -> None:
            db = Database.connect(engine, reactor)
            try:
                await db.run("schema", schema.upgrade_txn, schema.load_steps(engine.name))
                await db.run("token", lambda txn: txn.execute(
                    "INSERT INTO tokens (token_hash, farmer_id, address, created) VALUES (?, 'f', 'a', 0)", (TOKEN,)))
                for name, run in (("pool (Database.run)", db.run), ("inline (Database.run_short)", db.run_short)) * 2:
                    cpu, wall = time.process_time(), time.perf_counter()
                    for _ in range(count):
                        await run("hop", body, TOKEN)
                    results[name] = ((time.process_time() - cpu) / count, (time.perf_counter() - wall) / count)
            finally:
                db.close()

        try:
            task.react(lambda reactor: defer.ensureDeferred(measure(reactor)))
        except SystemExit as e:
            if e.code:
                raise
        conn = sqlite3.connect(path, isolation_level=None)
        engine.on_connect(conn)
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(count):
            conn.execute("BEGIN IMMEDIATE")
            body(Txn(conn.cursor(), engine), TOKEN)
            conn.execute("COMMIT")
        results["the statements alone (bare connection)"] = ((time.process_time() - cpu) / count,
                                                             (time.perf_counter() - wall) / count)
        conn.close()
    print(f"== a short SQLite transaction (token lookup + one-row update), {count} one after another")
    for name, (cpu, wall) in results.items():
        print(f"   {name:<40} CPU {cpu * 1e6:7.1f} µs   wall {wall * 1e6:7.1f} µs per transaction")
    hop = results["pool (Database.run)"][0] - results["inline (Database.run_short)"][0]
    print(f"   the thread hop costs {hop * 1e6:.1f} µs of CPU per transaction")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
