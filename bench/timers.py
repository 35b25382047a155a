"""Timer tick cost against database size.

Fills a fresh database with N active v0 contracts (1% of them due now; the rows are generated in
SQL by a recursive CTE: 10M contracts on SQLite in a few minutes), then times the v0 timer pass
the daemon runs every tick: pages of ``contracts.update_due_txn`` (``PASS_PAGE`` contracts each,
each page its own transaction, as ``ChallengeSupply.issue_due`` runs them) until no due contract
is left, then ``fill_starved_txn`` if a contract starved. Between repeats the pass's changes are
undone (the due contracts get their old window back, their challenges are unused again), so every
repeat does the same work on the same (warm) database. The tick should grow with the due work,
not with N.

Printed per engine and size: the best (``tick s``) and median pass (wall seconds), the least CPU seconds of
the bench process for it (client side: Python and the driver; on SQLite the database engine
too), ms per due contract (best), the page size, the fill time, and on MariaDB the least CPU
seconds of the server thread serving the connection (``server s``; read from /proc, so only for a
server on this machine that root can see).

Usage:
  python bench/timers.py [--sizes 10000,100000,1000000] [--due 0.01] [--repeat 3] [--mysql URL]
  python bench/timers.py --big            # also 10,000,000 contracts on SQLite: the tick, and the
                                          # daemon's peak RSS on that database (bench/rss.py)
  python bench/timers.py --ab TREE        # A/B: the tick of the code in TREE (e.g. a worktree of
                                          # main) against this tree's, alternating, same databases
  python bench/timers.py --quick          # tiny sizes (the test suite)
(--mysql defaults to $DOWNSTREAM_TEST_MYSQL_URL; that database is DROPPED and re-created; --mysql ""
runs SQLite only.) --cache DIR keeps the SQLite databases there between runs (default: a temp dir
removed at the end).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
# the A/B child runs the tick of another tree's code: DTX_TREE names it
sys.path.insert(0, os.environ.get("DTX_TREE") or str(HERE.parent.parent))

from downstream_tx.db import contracts, schema  # noqa: E402
from downstream_tx.db.database import Txn  # noqa: E402
from downstream_tx.db.engine import create_engine  # noqa: E402
from downstream_tx.domain.rules import Rules  # noqa: E402
from downstream_tx.v0.challenges import PASS_PAGE  # noqa: E402

sys.path.insert(0, str(HERE.parent))
import dbcost  # noqa: E402

FILES = 100
#: the pass as the test nodes run it: without containment
UNCONTAINED = Rules(containment_retries=0)
NOW = 1_700_000_000.0
#: the contracts not due now are due this many seconds later (+ 0…29 s)
LATER = 30
BIG = 10_000_000
#: the --big database: "now" is the real time it was built at and the contracts not due then are
#: due a day later, so the daemon started on it (its RSS run) finds the same 1% due
BIG_LATER = 86_400


def fresh(url: str):
    """A new empty database at the current schema: (engine, connection, Txn)."""
    engine = create_engine(url)
    if engine.name == "mysql":
        import pymysql

        u = engine.url
        conn = pymysql.connect(host=u.host, port=u.port, user=u.user, password=u.password)
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{u.database}`")
            cur.execute(f"CREATE DATABASE `{u.database}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
        conn.close()
    engine, conn, txn = connect(url)
    schema.upgrade_txn(txn, schema.load_steps(engine.name))
    conn.commit()
    return engine, conn, txn


def connect(url: str):
    engine = create_engine(url)
    conn = engine.connect()
    return engine, conn, Txn(conn.cursor(), engine)


def due_count(n: int, due_fraction: float) -> int:
    return max(1, int(n * due_fraction))


def fill(conn, txn: Txn, n: int, due_fraction: float, now: float = NOW, later: float = LATER) -> int:
    """N active v0 contracts of one token over ``FILES`` files: every ``1/due_fraction``-th one due
    at ``now`` (deadline ``now - 1``, answered, so no miss), the others due ``later`` + 0…29 s after
    ``now``; each file has enough unused challenges for its due contracts (+2). Rows are generated
    by the database (a recursive CTE), a million per statement (MariaDB: 200,000). Returns the due count."""
    due = due_count(n, due_fraction)
    step = int(1 / due_fraction)
    mysql = txn.engine_name == "mysql"
    div = "DIV" if mysql else "/"
    txn.execute("INSERT INTO tokens (token_hash, farmer_id, address, created) VALUES (?, 'f', 'a', 0)",
                (os.urandom(32),))
    token_id = txn.lastrowid
    txn.executemany(
        "INSERT INTO files (file_hash, kind, size, redundancy, interval_s, replicas, added) "
        "VALUES (?, 'stored', 1000, ?, 60, ?, 0)",
        [(os.urandom(32).hex(), n, n // FILES) for _ in range(FILES)],
    )
    file_ids = [r[0] for r in txn.execute("SELECT id FROM files ORDER BY id").fetchall()]
    assert file_ids == list(range(file_ids[0], file_ids[0] + FILES)), "file ids must be consecutive"
    txn.execute("INSERT INTO challenge_batches (file_id, root_seed, merkle_root, count, created) "
                "VALUES (?, ?, ?, 0, 0)", (file_ids[0], b"r" * 32, b"m" * 32))
    batch_id = txn.lastrowid
    per_file = due // FILES + 2
    txn.executemany(
        "INSERT INTO challenges (batch_id, file_id, seq, seed, answer) VALUES (?, ?, ?, ?, ?)",
        [(batch_id, f, i, os.urandom(32), "0" * 64) for f in file_ids for i in range(per_file)],
    )
    conn.commit()
    insert_generated(conn, txn, n, "INSERT INTO contracts (token_id, file_id, protocol, state, start, interval_s, "
                     "seq, issued, deadline, answered)",
                     f"SELECT ?, ? + (i + i {div} {FILES}) % {FILES}, 0, 'active', ?, 60, 0, 0, "
                     f"CASE WHEN i % {step} = 0 AND i {div} {step} < ? THEN ? ELSE ? + (i % 30) END, 1 FROM s",
                     (token_id, file_ids[0], now - 60, due, now - 1, now + later))
    if not mysql:
        txn.execute("ANALYZE")
    conn.commit()
    return due


def insert_generated(conn, txn: Txn, n: int, insert: str, select: str, args: tuple, start: int = 0,
                     chunk: int | None = None) -> None:
    """``insert`` (``INSERT INTO table (columns)``) the rows of ``select`` (its ``?`` are ``args``)
    over ``s(i)``, i = ``start`` … n-1, generated by the database (a recursive CTE), ``chunk`` rows
    per statement (default a million, MariaDB 200,000), each committed."""
    mysql = txn.engine_name == "mysql"
    if mysql:
        # the server's own limit on recursion (MariaDB default 1000 in some versions)
        txn.execute("SET SESSION max_recursive_iterations = 4294967295")
    # a server statement must end within the driver's read timeout, on a busy server too
    chunk = chunk or (200_000 if mysql else 1_000_000)
    for first in range(start, n, chunk):
        last = min(n, first + chunk) - 1
        txn.execute(f"{insert} WITH RECURSIVE s(i) AS (SELECT ? UNION ALL SELECT i + 1 FROM s WHERE i < ?) {select}",
                    (first, last, *args))
        conn.commit()


def reset(conn, txn: Txn, now: float = NOW) -> None:
    """Undo a pass at ``now`` over a database ``fill`` made: the contracts it issued (their next
    deadline is ``now + 60``, where no other contract's is) are due at ``now`` again, their
    challenges unused."""
    txn.execute("UPDATE contracts SET seq = 0, issued = 0, challenge_id = NULL, answered = 1, deadline = ? "
                "WHERE state = 'active' AND protocol = 0 AND deadline >= ? AND deadline < ?",
                (now - 1, now + 60, now + 61))
    txn.execute("UPDATE challenges SET used = 0 WHERE used = 1")
    conn.commit()


def server_thread_cpu(txn: Txn):
    """A function returning the CPU seconds the MariaDB thread serving this connection has used
    (``/proc/<server>/task/<tid>/schedstat``: bench/dbcost.py; None where that cannot be read:
    another user's server, another machine, SQLite)."""
    if txn.engine_name != "mysql":
        return None
    return dbcost.connection_thread_cpu(txn.scalar)


def tick(conn, txn: Txn, now: float = NOW, page_size: int | None = None) -> dict:
    """One v0 timer pass as the daemon runs it (page by page, each page committed): its figures."""
    page_size = page_size or PASS_PAGE
    server = server_thread_cpu(txn)
    server_cpu = server() if server else 0.0
    wall, cpu = time.perf_counter(), time.process_time()
    issued = pages = starved = missed = 0
    while True:
        page = contracts.update_due_txn(txn, UNCONTAINED, now, 3, page_size, None)
        conn.commit()
        issued, pages, starved = issued + page.issued, pages + 1, starved + page.starved
        missed += page.missed
        if not page.more:
            break
    if starved:  # as ChallengeSupply.issue_due (after its top-up)
        issued += contracts.fill_starved_txn(txn, now)
        conn.commit()
    return {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu, "issued": issued,
            "pages": pages, "page": page_size, "missed": missed,
            "server_cpu": server() - server_cpu if server else None}


def tick_in(tree: str | None, url: str, now: float = NOW, page_size: int | None = None) -> dict:
    """One pass at ``now``, by the code of ``tree`` (None: this tree's, in this process)."""
    if tree is None:
        _, conn, txn = connect(url)
        try:
            return tick(conn, txn, now, page_size)
        finally:
            conn.close()
    env = dict(os.environ, DTX_TREE=tree, PYTHONPATH=tree)
    out = subprocess.run([sys.executable, str(HERE), "--tick-child", url, "--now", repr(now),
                          "--page", str(page_size or 0)], env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def build(url: str, n: int, due_fraction: float, now: float = NOW, later: float = LATER) -> tuple[int, float]:
    started = time.perf_counter()
    _, conn, txn = fresh(url)
    due = fill(conn, txn, n, due_fraction, now, later)
    conn.close()
    return due, time.perf_counter() - started


def sqlite_db(cache: Path, n: int, due_fraction: float, big: bool = False) -> tuple[Path, float, int, float]:
    """A cached SQLite database of ``n`` contracts (built once per cache dir): (path, its "now",
    due contracts, seconds the build took)."""
    name = f"timers-{n}-{due_fraction:g}" + ("-big" if big else "")
    for path in cache.glob(name + "-*.db"):
        return path, float(path.stem.rsplit("-", 1)[1]), due_count(n, due_fraction), 0.0
    now, later = (float(int(time.time())), BIG_LATER) if big else (NOW, LATER)
    path = cache / f"{name}-{int(now)}.db"
    building = path.with_suffix(".building")
    for p in cache.glob(building.name + "*"):
        p.unlink()
    due, seconds = build("sqlite:///" + str(building), n, due_fraction, now, later)
    building.rename(path)
    return path, now, due, seconds


def line(name: str, n: int, due: int, runs: list[dict], fill_s: float, label: str = "") -> str:
    walls = [r["wall"] for r in runs]
    best = min(walls)
    cpu = min(r["cpu"] for r in runs)
    server = [r["server_cpu"] for r in runs if r.get("server_cpu") is not None]
    for r in runs:
        assert r["issued"] == due, (r, due)
    return (f"{name:8} {label:6} {n:>10} {due:>8} {best:>8.3f} {statistics.median(walls):>8.3f} {cpu:>7.3f} "
            f"{best / due * 1000:>9.4f} {runs[0]['page']:>6} {fill_s:>7.1f} "
            + (f"{min(server):>9.2f}" if server else f"{'-':>9}"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--due", type=float, default=0.01)
    parser.add_argument("--repeat", type=int, default=3, help="passes per size (the best and median are printed)")
    parser.add_argument("--mysql", default=os.environ.get("DOWNSTREAM_TEST_MYSQL_URL"))
    parser.add_argument("--big", action="store_true",
                        help=f"also {BIG:,} contracts on SQLite: the tick and the daemon's peak RSS")
    parser.add_argument("--big-size", type=int, default=BIG, help="contracts of the --big run")
    parser.add_argument("--rss-seconds", type=float, default=20.0, help="how long the daemon runs (--big)")
    parser.add_argument("--ab", metavar="TREE", help="alternate passes of TREE's code and this tree's")
    parser.add_argument("--page", type=int, help="contracts per page (default: the code's PASS_PAGE)")
    parser.add_argument("--cache", help="keep the SQLite databases in this directory")
    parser.add_argument("--engines", default="sqlite,mysql")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (for the test suite)")
    parser.add_argument("--tick-child", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--now", type=float, default=NOW, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.tick_child:
        print(json.dumps(tick_in(None, args.tick_child, args.now, args.page)))
        return
    sizes = [1000, 2000] if args.quick else [int(s) for s in args.sizes.split(",")]
    repeat = 1 if args.quick else args.repeat
    engines = args.engines.split(",")
    targets = [(name, url) for name, url in (("sqlite", None), ("mysql", args.mysql)) if name in engines
               and (name == "sqlite" or url)]
    jobs = [(name, url, n, False) for name, url in targets for n in sizes]
    if args.big:
        jobs.append(("sqlite", None, args.big_size, True))
    print(f"timer tick: {args.due:.0%} of N active v0 contracts due, {FILES} files, best of {repeat} passes"
          + (f"; A/B: a = {args.ab}, b = this tree, alternating" if args.ab else ""))
    print(f"{'engine':8} {'code':6} {'contracts':>10} {'due':>8} {'tick s':>8} {'median s':>8} {'cpu s':>7} "
          f"{'ms/due':>9} {'page':>6} {'fill s':>7} {'server s':>9}")
    tmp = tempfile.mkdtemp(prefix="dtx-timers-") if args.cache is None else None
    cache = Path(args.cache or tmp)
    cache.mkdir(parents=True, exist_ok=True)
    try:
        for name, url, n, big in jobs:
            now = NOW
            if url is None:
                path, now, due, fill_s = sqlite_db(cache, n, args.due, big)
                url = "sqlite:///" + str(path)
            else:
                due, fill_s = build(url, n, args.due)
            trees = [args.ab, None] if args.ab else [None]
            runs: dict[str | None, list[dict]] = {t: [] for t in trees}
            for _ in range(repeat):
                for tree in trees:
                    _, conn, txn = connect(url)
                    reset(conn, txn, now)
                    conn.close()
                    runs[tree].append(tick_in(tree, url, now, args.page))
            for tree in trees:
                label = "" if not args.ab else ("a" if tree else "b")
                print(line(name, n, due, runs[tree], fill_s, label))
                sys.stdout.flush()
        if args.big:
            sys.path.insert(0, str(HERE.parent))
            import rss

            path, now, due, _ = sqlite_db(cache, args.big_size, args.due, True)
            for tree in ([args.ab, None] if args.ab else [None]) * (1 if args.quick else 2):
                _, conn, txn = connect("sqlite:///" + str(path))
                reset(conn, txn, now)
                conn.close()
                r = rss.measure_prepared(path, due, args.rss_seconds, tree)
                code = "" if not args.ab else ("a: " if tree else "b: ")
                print(f"{code}daemon on {args.big_size:,} contracts (SQLite, {due} due at start, the rest a day "
                      f"later), timers running {args.rss_seconds:g} s: peak RSS {r['peak_mib']:.1f} MiB, "
                      f"RSS at the end {r['rss_mib']:.1f} MiB, /health 503s {r['unhealthy']}")
                for summary in r["passes"][:2]:
                    print(f"  {summary}")
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
