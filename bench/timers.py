"""Timer tick cost against database size.

Fills a fresh database with N active v0 contracts (the rows are generated in SQL by a recursive
CTE: 10M contracts on SQLite in a few minutes): 1% of them are at the end of a window now, and 99%
of those answered it (``UNANSWERED_EVERY``), the misses spread over the ``FILES`` files; the others'
windows end an hour later. Then times the
v0 timer pass the daemon runs every tick: pages of ``contracts.update_due_txn`` (``PASS_PAGE``
contracts each, each page its own transaction, as ``ChallengeSupply.issue_due`` runs them) until
no due contract is left, then the top-up's query (which of the files the pass took challenges from
are under the low-water mark), then ``fill_starved_txn`` if a contract starved. Before every pass the
due contracts are put back (:func:`reset`), the answered ones in the stored form of ``--form``:
``new``, answered ahead (their deadline the end of the next window: the timer visits only the
misses), or ``old`` (their deadline now: main's form, every due contract visited and issued); with
``--ab`` TREE's passes get ``--ab-form`` (default old).
The tick should grow with the misses, not with N.

Printed per engine and size: the due and missed contracts and those the pass issued a challenge,
the best (``tick s``) and median pass (wall seconds), the least CPU seconds of the bench process for
it (client side: Python and the driver; on SQLite the database engine too), ms per miss (best
wall), the page size, the fill time, and on MariaDB the least CPU seconds of the server thread
serving the connection (``server s``; read from /proc, so only for a server on this machine that
root can see).

Usage:
  python bench/timers.py [--sizes 10000,100000,1000000] [--due 0.01] [--repeat 3] [--mysql URL]
  python bench/timers.py --big            # also 10,000,000 contracts on SQLite: the tick, and the
                                          # daemon's peak RSS on that database (bench/rss.py)
  python bench/timers.py --ab TREE        # A/B: the tick of the code in TREE (e.g. a worktree of
                                          # main) against this tree's, alternating, same databases
  python bench/timers.py --quick          # tiny sizes (the test suite)
  python bench/timers.py --form old       # this tree's pass on rows of main's form (every due one visited)
  python bench/timers.py --farmers 1000   # the misses held by 1,000 farmers (each with its reputation row),
                                          # not by the layout's one token
(--mysql defaults to $DOWNSTREAM_TEST_MYSQL_URL; that database is DROPPED and re-created, unless
--keep finds it holding the contracts of the size asked, in this ``LAYOUT``; --mysql "" runs SQLite
only.) --cache DIR keeps the SQLite databases there between runs (default: a temp dir removed at
the end).
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

from downstream_tx.config import SETTINGS_BY_NAME  # noqa: E402
from downstream_tx.db import challenges, contracts, reputation, schema  # noqa: E402
from downstream_tx.db.database import Txn  # noqa: E402
from downstream_tx.db.engine import create_engine  # noqa: E402
from downstream_tx.domain.rules import Rules, initial_alpha  # noqa: E402
from downstream_tx.v0.challenges import PASS_PAGE  # noqa: E402

sys.path.insert(0, str(HERE.parent))
import dbcost  # noqa: E402

FILES = 100
#: the low-water mark of unused challenges the pass's top-up checks (the setting's default)
LOW_WATER = SETTINGS_BY_NAME["challenge_low_water"].default
#: the pass as the test nodes run it: without containment
UNCONTAINED = Rules(containment_retries=0)
NOW = 1_700_000_000.0
#: the contracts not due now are due this many seconds later (+ 0…29 s)
LATER = 3600
#: one in this many of the due contracts did not answer (a miss); the others did
UNANSWERED_EVERY = 100
#: the stored forms :func:`reset` gives the due contracts that answered: ``old``, the window that
#: ended answered (deadline now - 1: main's form, and rows written before the timers visited only
#: misses); ``new``, the next window's deadline (now + 59) — an answered contract is not due
FORMS = ("old", "new")
BIG = 10_000_000
#: the layout of the generated contracts (:func:`fill`); a kept database of another layout is rebuilt
LAYOUT = 2
#: the farmer id of the token that holds them, which names the layout
FARMER = f"timers-layout-{LAYOUT}"
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
    """N active v0 contracts of one token over ``FILES`` files: every ``1/due_fraction``-th one's
    window ends at ``now`` (its challenge's deadline ``now - 1``; 1 in ``UNANSWERED_EVERY`` of
    them unanswered, deadline ``now - 1.5``: the misses), the others' windows end ``later`` + 0…29 s
    after ``now``; the due contracts, and the misses among them, spread evenly over the files (as a
    network's misses are over its files: the pass takes challenges of every file, not of one —
    before :data:`LAYOUT` 2 every miss was of the first file); each file has enough unused
    challenges for its due contracts (+2). The due
    contracts are written in the stored form :func:`reset` gives them. Rows are generated by the
    database (a recursive CTE), a million per statement (MariaDB: 200,000). Returns the due count."""
    due = due_count(n, due_fraction)
    step = int(1 / due_fraction)
    mysql = txn.engine_name == "mysql"
    div = "DIV" if mysql else "/"
    txn.execute("INSERT INTO tokens (token_hash, farmer_id, address, created) VALUES (?, ?, 'a', 0)",
                (os.urandom(32), FARMER))
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
    # the challenge every contract was given (and answered, but for the misses): used
    txn.execute("INSERT INTO challenges (batch_id, file_id, seq, seed, answer, used) VALUES (?, ?, -1, ?, ?, 1)",
                (batch_id, file_ids[0], os.urandom(32), "0" * 64))
    given = txn.lastrowid
    per_file = due // FILES + 2
    txn.executemany(
        "INSERT INTO challenges (batch_id, file_id, seq, seed, answer) VALUES (?, ?, ?, ?, ?)",
        [(batch_id, f, i, os.urandom(32), "0" * 64) for f in file_ids for i in range(per_file)],
    )
    conn.commit()
    # the due ones start at now - 61 (the misses at now - 61.5), window 0 ends 60 s later
    insert_generated(conn, txn, n, "INSERT INTO contracts (token_id, file_id, protocol, state, start, interval_s, "
                     "seq, challenge_id, issued, deadline, answered)",
                     f"SELECT ?, ? + (i + i {div} {FILES} + i {div} {FILES * FILES}) % {FILES}, 0, 'active', st, "
                     "60, 0, ?, st, st + 60, 1 "
                     f"FROM (SELECT i, CASE WHEN i % {step} = 0 AND i {div} {step} < ? "
                     f"THEN ? - CASE WHEN i {div} {step} % {UNANSWERED_EVERY} = 0 THEN 0.5 ELSE 0 END "
                     f"ELSE ? + (i % 30) END AS st FROM s) q",
                     (token_id, file_ids[0], given, due, now - 61, now + later - 60))
    reset(conn, txn, now)
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


def reset(conn, txn: Txn, now: float = NOW, form: str = "new") -> None:
    """Put the due contracts :func:`fill` made (those with a deadline within ``LATER / 2`` of
    ``now``) back as they were before the pass at ``now``, answered ones in ``form`` (:data:`FORMS`),
    and the challenges the pass took unused again."""
    advance = 120 if form == "new" else 60
    given = txn.scalar("SELECT MIN(id) FROM challenges")
    txn.execute("UPDATE contracts SET seq = 0, issued = start, challenge_id = ?, "
                "answered = CASE WHEN start < ? THEN 0 ELSE 1 END, "
                "deadline = start + CASE WHEN start < ? THEN 60 ELSE ? END, run = 0, misses = 0, contained = 0, "
                "prev_challenge_id = NULL, prev_deadline = NULL, prev_missed = 0 "
                "WHERE state = 'active' AND protocol = 0 AND deadline < ?",
                (given, now - 61.25, now - 61.25, advance, now + LATER / 2))
    txn.execute("UPDATE challenges SET used = 0 WHERE used = 1 AND id <> ?", (given,))
    # the farmer made a request in the windows that end now: its misses are audit failures
    # (counted in its reputation), not those of a farmer that was offline
    txn.execute("UPDATE tokens SET last_seen = ?", (now - 30,))
    conn.commit()
    if txn.engine_name == "sqlite":  # the pass does not pay for copying this reset back from the WAL
        txn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


#: the farmer id of the tokens :func:`spread` adds (``--farmers``), followed by their number
SPREAD = "timers-farmer-"


def spread(conn, txn: Txn, now: float, farmers: int) -> None:
    """Give the due contracts that missed at ``now`` (as :func:`reset` left them) to ``farmers``
    tokens of as many addresses, round robin by contract id, each address with a reputation row
    (``--farmers``: a network's misses are spread over its farmers; each one's reputation is read
    and written by the pass); 0: back to the layout's one token (:func:`fill`). The tokens are
    made once and kept (a kept database serves both); only contracts whose token differs are
    written. Then every reputation row is put back in good standing with fresh scores and no
    counts, so each pass records the same results on the same rows."""
    first = txn.scalar("SELECT MIN(id) FROM tokens")
    have = {str(f): int(i) for i, f in txn.execute(
        "SELECT id, farmer_id FROM tokens WHERE farmer_id LIKE ?", (SPREAD + "%",)).fetchall()}
    missing = [i for i in range(farmers) if f"{SPREAD}{i}" not in have]
    if missing:
        txn.executemany("INSERT INTO tokens (token_hash, farmer_id, address, created, last_seen) "
                        "VALUES (?, ?, ?, 0, ?)",
                        [(os.urandom(32), f"{SPREAD}{i}", f"timers-{i:06d}", now - 30) for i in missing])
        have = {str(f): int(i) for i, f in txn.execute(
            "SELECT id, farmer_id FROM tokens WHERE farmer_id LIKE ?", (SPREAD + "%",)).fetchall()}
    if txn.engine_name == "sqlite":
        # the fill's ANALYZE saw one token: with those statistics SQLite reads the pass's farmers
        # (db/online.py) by scanning every token, a plan no node without them would pick
        analyzed = txn.scalar("SELECT stat FROM sqlite_stat1 WHERE tbl = 'tokens' AND idx = 'tokens_address'")
        if analyzed is not None and int(str(analyzed).split()[0]) != txn.scalar("SELECT COUNT(*) FROM tokens"):
            txn.execute("ANALYZE tokens")
    owners = [have[f"{SPREAD}{i}"] for i in range(farmers)] or [first]
    reputation.ensure_txn(txn, [f"timers-{i:06d}" for i in range(farmers)] + ["a"])
    missed = txn.execute("SELECT id, token_id FROM contracts WHERE state = 'active' AND protocol = 0 AND deadline < ? "
                         "AND start < ? ORDER BY id", (now + LATER / 2, now - 61.25)).fetchall()
    moved = [(int(cid), owners[k % len(owners)]) for k, (cid, tid) in enumerate(missed)
             if int(tid) != owners[k % len(owners)]]
    txn.update_by_id("contracts", ["token_id"], moved)
    unknown, fresh_alpha = initial_alpha(Rules().unknown_lam), initial_alpha(Rules().lam)
    txn.execute("UPDATE reputation SET audit_alpha = ?, audit_beta = 0, unknown_alpha = ?, unknown_beta = 0, "
                "status = 'ok', status_since = NULL, status_reason = NULL, pending_end = 0, passes = 0, fails = 0, "
                "misses = 0, retries = 0, errors = 0", (fresh_alpha, unknown))
    conn.commit()


def server_thread_cpu(txn: Txn):
    """A function returning the CPU seconds the MariaDB thread serving this connection has used
    (``/proc/<server>/task/<tid>/schedstat``: bench/dbcost.py; None where that cannot be read:
    another user's server, another machine, SQLite)."""
    if txn.engine_name != "mysql":
        return None
    return dbcost.connection_thread_cpu(txn.scalar)


def tick(conn, txn: Txn, now: float = NOW, page_size: int | None = None) -> dict:
    """One v0 timer pass as the daemon runs it (``ChallengeSupply.issue_due``: page by page, each
    page committed; then the files the pass took challenges from that are under the low-water
    mark, the top-up's query; then the starved contracts): its figures."""
    page_size = page_size or PASS_PAGE
    server = server_thread_cpu(txn)
    server_cpu = server() if server else 0.0
    wall, cpu = time.perf_counter(), time.process_time()
    issued = pages = starved = missed = 0
    file_ids: set[int] = set()
    while True:
        page = contracts.update_due_txn(txn, UNCONTAINED, now, 3, page_size, None)
        conn.commit()
        issued, pages, starved = issued + page.issued, pages + 1, starved + page.starved
        missed += page.missed
        file_ids |= page.file_ids
        if not page.more:
            break
    if file_ids:  # which files to top up (the batches themselves are made off the pass)
        challenges.low_files_txn(txn, sorted(file_ids), max(LOW_WATER, 1 if starved else 0))
        conn.commit()
    if starved:  # as ChallengeSupply.issue_due (after its top-up)
        issued += contracts.fill_starved_txn(txn, now)
        conn.commit()
    return {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu, "issued": issued,
            "missed": missed, "pages": pages, "page": page_size,
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


def built(url: str, n: int, due_fraction: float) -> tuple[int, float]:
    """:func:`build`, unless the database holds ``n`` contracts already (``--keep``)."""
    try:
        _, conn, txn = connect(url)
        try:
            held = txn.scalar("SELECT COUNT(*) FROM contracts")
            layout = txn.scalar("SELECT farmer_id FROM tokens ORDER BY id LIMIT 1")
            if txn.scalar("SELECT COUNT(*) FROM files") != FILES:
                layout = None
        finally:
            conn.close()
    except Exception:
        held = layout = None
    if held == n and layout == FARMER:
        return due_count(n, due_fraction), 0.0
    return build(url, n, due_fraction)


def sqlite_db(cache: Path, n: int, due_fraction: float, big: bool = False) -> tuple[Path, float, int, float]:
    """A cached SQLite database of ``n`` contracts (built once per cache dir): (path, its "now",
    due contracts, seconds the build took)."""
    name = f"timers-l{LAYOUT}-{n}-{due_fraction:g}" + ("" if FILES == 100 else f"-f{FILES}") + ("-big" if big else "")
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
    misses = misses_of(due)
    for r in runs:
        assert r["missed"] == misses and r["issued"] in (due, misses), (r, due, misses)
    return (f"{name:8} {label:6} {n:>10} {due:>8} {runs[0]['issued']:>7} {misses:>6} {best:>8.3f} "
            f"{statistics.median(walls):>8.3f} {cpu:>7.3f} {best / misses * 1000:>9.3f} {runs[0]['page']:>6} "
            f"{fill_s:>7.1f} " + (f"{min(server):>9.3f}" if server else f"{'-':>9}"))


def misses_of(due: int) -> int:
    """The due contracts :func:`fill` left unanswered."""
    return (due + UNANSWERED_EVERY - 1) // UNANSWERED_EVERY


def main(argv: list[str] | None = None) -> None:
    global FILES
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
    parser.add_argument("--form", choices=FORMS, default="new",
                        help="stored form of the answered due contracts for this tree's passes")
    parser.add_argument("--ab-form", choices=FORMS, default="old",
                        help="--ab: the stored form for TREE's passes (old: main's before the answered-ahead "
                             "form; new: a TREE that stores it too)")
    parser.add_argument("--files", type=int, default=FILES,
                        help=f"files the contracts are spread over (default {FILES}: 10 misses per file at 10M; "
                             "1000 with --due 0.1 at 1M: one miss per file)")
    parser.add_argument("--farmers", type=int, default=0,
                        help="the misses' contracts held by this many farmers (distinct addresses, each with a "
                             "reputation row), round robin; default 0: all by the layout's one token")
    parser.add_argument("--keep", action="store_true",
                        help="MariaDB: reuse the database when it holds the contracts of the size asked")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (for the test suite)")
    parser.add_argument("--tick-child", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--now", type=float, default=NOW, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    FILES = args.files
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
    print(f"timer tick: {args.due:.0%} of N active v0 contracts due, {FILES} files, "
          + (f"misses over {args.farmers} farmers, " if args.farmers else "")
          + f"best of {repeat} passes"
          + (f"; A/B: a = {args.ab}, b = this tree, alternating" if args.ab else ""))
    print(f"{'engine':8} {'code':6} {'contracts':>10} {'due':>8} {'issued':>7} {'missed':>6} {'tick s':>8} "
          f"{'median s':>8} {'cpu s':>7} {'ms/miss':>9} {'page':>6} {'fill s':>7} {'server s':>9}")
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
                due, fill_s = built(url, n, args.due) if args.keep else build(url, n, args.due)
            trees = [args.ab, None] if args.ab else [None]
            runs: dict[str | None, list[dict]] = {t: [] for t in trees}
            for _ in range(repeat):
                for tree in trees:
                    _, conn, txn = connect(url)
                    reset(conn, txn, now, args.form if tree is None else args.ab_form)
                    spread(conn, txn, now, args.farmers)
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
