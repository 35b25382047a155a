"""What recording a write transaction's id (``txn_outcomes``, docs/operations.md "Lost commits")
costs on MySQL/MariaDB: the same transactions through ``Database.run`` on the real connection pool,
with the id recorded and without (as before the rule), in alternating blocks of the same session so
that drift and the machine's other load fall on both alike.

Transactions, one after another:

- ``answer shape``: a token looked up by its hash with ``FOR UPDATE`` and one row updated (what a
  v0 answer does, in two statements);
- ``batch``: 50 rows updated by one ``UPDATE … JOIN`` (a v1 answer batch, a timer page).

Both change rows every time (a transaction that changes nothing commits without a log write, and
would make the recorded id look like the cost of the commit's flush).

Printed per transaction: wall time (what a farmer waits for it), the node's CPU (all its threads)
and the database server's CPU (its pid from ``$DTX_BENCH_DB_PID`` or the one local ``mariadbd``;
other sessions' queries count too). CPU per unit of work is the figure to compare.

Usage: python bench/lost_commits.py [--count 2000] [--blocks 6] [--quick]
  ($DOWNSTREAM_TEST_MYSQL_URL's server, database $DOWNSTREAM_BENCH_DB, dropped and re-created)
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from farmers import db_server_pid, mysql_url  # noqa: E402
from loadgen import proc_cpu  # noqa: E402

ROWS = 50


def answer_shape(txn, token_hash: bytes) -> int:
    from downstream_tx.db.tokens import lookup_txn

    row = txn.execute("SELECT id FROM tokens WHERE token_hash = ? AND deleted IS NULL" + txn.for_update(),
                      (token_hash,)).fetchone()
    if row is None:
        lookup_txn(txn, token_hash)  # raises UnknownToken
    txn.execute("UPDATE tokens SET hbcount = hbcount + 1 WHERE id = ?", (row[0],))
    return row[0]


def batch(txn, ids: list[int], base: int) -> int:
    """Every row gets a new value (an UPDATE that changes nothing commits without a log write)."""
    return txn.update_by_id("tokens", ["hbcount"], [(i, base + n) for n, i in enumerate(ids)])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=2000, help="transactions per block")
    ap.add_argument("--blocks", type=int, default=6, help="blocks per variant, alternating")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.count, args.blocks = 50, 2

    from twisted.internet import defer, task

    from downstream_tx.db import schema
    from downstream_tx.db.database import Database
    from downstream_tx.db.engine import create_engine

    url = mysql_url()
    engine = create_engine(url)
    server = db_server_pid()
    # name → variant → [(wall, node cpu, server cpu) per transaction, one per block]
    figures: dict[str, dict[str, list[tuple[float, float, float]]]] = {}

    async def measure(reactor) -> None:
        db = Database.connect(engine, reactor, pool_size=1)
        try:
            await db.run("schema", schema.upgrade_txn, schema.load_steps(engine.name))
            tokens = [os.urandom(32) for _ in range(ROWS)]
            for t in tokens:
                await db.run("token", lambda txn, t=t: txn.execute(
                    "INSERT INTO tokens (token_hash, farmer_id, address, created) VALUES (?, 'f', 'a', 0)", (t,)))
            serial = itertools.count(1)
            ids = await db.run("ids", lambda txn: [r[0] for r in txn.execute("SELECT id FROM tokens").fetchall()])
            work = {"answer shape": (answer_shape, lambda n: (tokens[n % ROWS],)),
                    "batch of 50": (batch, lambda n: (ids, next(serial) * ROWS))}
            for name, (body, arguments) in work.items():
                for block in range(args.blocks * 2):
                    variant = ("recorded", "not recorded")[block % 2]
                    db.record_outcomes = variant == "recorded"
                    count = args.count if name == "answer shape" else args.count // 10
                    cpu, wall, srv = time.process_time(), time.perf_counter(), proc_cpu(server) if server else 0.0
                    for n in range(count):
                        await db.run(name, body, *arguments(n))
                    used = (time.perf_counter() - wall, time.process_time() - cpu,
                            (proc_cpu(server) - srv) if server else 0.0)
                    figures.setdefault(name, {}).setdefault(variant, []).append(tuple(x / count for x in used))
            kept = await db.run("kept", lambda txn: txn.scalar("SELECT COUNT(*) FROM txn_outcomes"))
            print(f"   ({kept} transaction ids recorded in all)")
        finally:
            db.close()

    try:
        task.react(lambda reactor: defer.ensureDeferred(measure(reactor)))
    except SystemExit as e:
        if e.code:
            raise
    print(f"== per transaction, MariaDB/MySQL, median of {args.blocks} alternating blocks"
          f"{'' if server else ' (server CPU not measured: no single local mariadbd)'}")
    for name, variants in figures.items():
        medians = {v: [statistics.median(x[i] for x in rows) * 1e6 for i in range(3)] for v, rows in variants.items()}
        for variant, (wall, cpu, srv) in medians.items():
            print(f"   {name:<13} {variant:<13} wall {wall:7.0f} µs   node CPU {cpu:6.0f} µs   "
                  f"server CPU {srv:6.0f} µs")
        (w1, c1, s1), (w0, c0, s0) = medians["recorded"], medians["not recorded"]
        print(f"   {name:<13} {'difference':<13} wall {w1 - w0:+7.0f} µs   node CPU {c1 - c0:+6.0f} µs   "
              f"server CPU {s1 - s0:+6.0f} µs   ({(w1 / w0 - 1) * 100:+.0f}% wall, "
              f"{(c1 / c0 - 1) * 100:+.0f}% node CPU)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
