"""Contract archiving under load: a node whose contracts table holds N finished contracts (default
1,000,000) archives them in bounded batches while v0 farmers are served.

1. Setup: the v0 bench's stored files (bench/farmers.py), then N finished contracts (ended or
   failed, with passes/fails/misses) of 1,000 old tokens, written straight into the database,
   all finished long before the retention.
2. Phase A, "usual cost": the daemon with ``contract_retention = 0`` (archiving off) under v0
   farmers: requests/s, latency, daemon CPU per request, the contract timer's mean pass time.
3. Phase B, the same farmers and the same daemon settings but archiving on (``contract_retention``
   1 day; the default pace, 4 batches of 500 every 5 s, or with ``--fast`` every second, 2,000
   contracts a second): the same
   figures, plus contracts archived, archive batch time (mean, max bucket) and the totals check.
4. The totals (contracts, passes, fails, misses per token, from contracts + contract_totals) before
   and after must be equal, and no active contract may have been touched.

The timer and transaction figures come from the daemon's /metrics (histogram sums and counts over
the measured window). The load generator and the daemon share this machine's cores.

Usage: python bench/archive.py [--db sqlite|mysql] [--finished 1000000] [--farmers 50] [--contracts 10]
       [--duration 20] [--quick]
"""

from __future__ import annotations

import os
import random
import socket
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import farmers  # noqa: E402
from loadgen import Spawned, machine  # noqa: E402

OLD_TOKENS = 1000
DAY = 86400


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def connect(db: str):
    from downstream_tx.db.database import Txn
    from downstream_tx.db.engine import create_engine

    engine = create_engine(db)
    conn = engine.connect()
    return conn, Txn(conn.cursor(), engine)


def fill_finished(db: str, n: int, now: float) -> float:
    """Add ``OLD_TOKENS`` tokens and ``n`` finished contracts on the stored files. Returns seconds."""
    started = time.time()
    conn, txn = connect(db)
    rng = random.Random(1)
    file_ids = [r[0] for r in txn.execute("SELECT id FROM files ORDER BY id").fetchall()]
    txn.executemany("INSERT INTO tokens (token_hash, farmer_id, address, created) VALUES (?, ?, ?, ?)",
                    [(os.urandom(32), os.urandom(10).hex(), farmers.ADDRESS, now - 90 * DAY)
                     for _ in range(OLD_TOKENS)])
    token_ids = [r[0] for r in txn.execute("SELECT id FROM tokens ORDER BY id").fetchall()][-OLD_TOKENS:]
    conn.commit()
    sql = ("INSERT INTO contracts (token_id, file_id, protocol, state, start, interval_s, seq, issued, deadline, "
           "answered, passes, fails, misses, run, ended, end_reason) VALUES (?, ?, 0, ?, ?, 60, ?, ?, ?, 1, ?, ?, ?, "
           "0, ?, ?)")
    chunk = 20000
    for first in range(0, n, chunk):
        rows = []
        for i in range(first, min(first + chunk, n)):
            # contracts made in order over 20 days, each running 1 to 500 minutes: those made
            # earlier mostly end earlier, as on a real node
            start = now - 60 * DAY + i * (20 * DAY / n)
            seq = rng.randrange(1, 500)
            failed = rng.random() < 0.2
            ended = start + seq * 60
            rows.append((rng.choice(token_ids), rng.choice(file_ids), "failed" if failed else "ended", start, seq,
                         ended - 60, ended, seq - 3 if seq > 3 else 0, rng.randrange(0, 3), rng.randrange(0, 3),
                         ended, "failed" if failed else "removed"))
        txn.executemany(sql, rows)
        conn.commit()
    conn.close()
    return time.time() - started


def totals(db: str) -> tuple[dict, list]:
    """Per token: contracts, passes, fails, misses (contracts + contract_totals); and the active
    contracts' rows."""
    conn, txn = connect(db)
    out: dict[int, list[int]] = {}
    for token_id, n, p, f, m in txn.execute(
            "SELECT token_id, COUNT(*), SUM(passes), SUM(fails), SUM(misses) FROM contracts "
            "WHERE state <> 'active' GROUP BY token_id").fetchall():
        out[int(token_id)] = [int(n), int(p or 0), int(f or 0), int(m or 0)]
    for token_id, n, p, f, m in txn.execute(
            "SELECT token_id, ended + failed, passes, fails, misses FROM contract_totals").fetchall():
        t = out.setdefault(int(token_id), [0, 0, 0, 0])
        for i, v in enumerate((n, p, f, m)):
            t[i] += int(v)
    active = [r[0] for r in txn.execute("SELECT id FROM contracts WHERE state = 'active' ORDER BY id").fetchall()]
    conn.close()
    return out, active


def end_active(db: str, now: float) -> None:
    """End every active contract now (not archived: it ended inside the retention) and free the files."""
    conn, txn = connect(db)
    txn.execute("UPDATE contracts SET state = 'ended', ended = ?, end_reason = 'removed' WHERE state = 'active'",
                (now,))
    txn.execute("UPDATE files SET replicas = 0")
    conn.commit()
    conn.close()


def finished_left(db: str) -> int:
    conn, txn = connect(db)
    n = int(txn.scalar("SELECT COUNT(*) FROM contracts WHERE state <> 'active'"))
    conn.close()
    return n


def scrape(port: int) -> dict[tuple[str, str], float]:
    """The daemon's /metrics as {(name, labels): value}."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        name, _, labels = key.partition("{")
        out[(name, labels.rstrip("}"))] = float(value)
    return out


def delta_mean(before: dict, after: dict, name: str, label: str) -> tuple[float, int]:
    """(mean seconds, count) of a histogram's observations between two scrapes."""
    s = after.get((name + "_sum", label), 0.0) - before.get((name + "_sum", label), 0.0)
    c = after.get((name + "_count", label), 0.0) - before.get((name + "_count", label), 0.0)
    return (s / c if c else 0.0), int(c)


def max_bucket(before: dict, after: dict, name: str, label: str) -> str:
    """The smallest bucket bound holding every observation of the window."""
    bounds = []
    for (n, labels), v in after.items():
        parts = labels.split(",")
        if n == name + "_bucket" and label in parts:
            le = next(p for p in parts if p.startswith("le=")).split('"')[1]
            bounds.append((float("inf") if le == "+Inf" else float(le), v - before.get((n, labels), 0.0)))
    bounds.sort()
    total = bounds[-1][1] if bounds else 0
    for le, v in bounds:
        if v >= total:
            return f"<= {le * 1000:g} ms"
    return "?"


def phase(name: str, args, db: str, data_dir: str, tmp: str, extra: list[str]) -> dict:
    port = free_port()
    argv = farmers.daemon_args("v0", args, db, data_dir) + ["--metrics-listen", f"tcp:{port}:interface=127.0.0.1",
                                                            "--stats-interval", "3600", *extra]
    left_before = finished_left(db)
    started = time.monotonic()
    with Spawned.daemon(Path(tmp) / f"daemon-{name}", argv) as daemon:
        marks: dict[str, dict] = {}
        cpu: dict[str, float] = {}
        left: dict[str, int] = {}

        def on_measure(what: str) -> None:
            left[what] = finished_left(db)
            marks[what] = scrape(port)
            cpu[what] = daemon.cpu()

        params = {"client": args.client, "contracts": args.contracts, "idle": args.idle, "chunk_attempts": 200,
                  "max_chunk_size": args.chunk_size, "_on_measure": on_measure}
        from loadgen import report, run_load

        stats, seconds, info = run_load("farmers:v0_farmer", daemon.url, args.farmers, args.processes, params,
                                        args.duration, setup_timeout=args.setup_timeout, warmup=args.warmup)
        left_after = finished_left(db)
        elapsed = time.monotonic() - started
        b, a = marks["start"], marks["stop"]
        node_cpu = cpu["stop"] - cpu["start"]
        timer, txns = "downstream_timer_duration_seconds", "downstream_db_transaction_duration_seconds"
        timer_label, archive_label = 'job="contracts"', 'transaction="archive_contracts"'
        tick, ticks = delta_mean(b, a, timer, timer_label)
        answer, answers = delta_mean(b, a, txns, 'transaction="answer"')
        batch, batches = delta_mean(b, a, txns, archive_label)
        extra_lines = {
            "daemon CPU": f"{node_cpu:.1f} s in the {seconds:.1f} s window ({node_cpu / seconds:.0%} of one core)",
            "daemon CPU per request": f"{node_cpu / max(stats.requests, 1) * 1000:.2f} ms",
            "contract timer pass": f"mean {tick * 1000:.1f} ms over {ticks} passes "
                                   f"(max {max_bucket(b, a, timer, timer_label)})",
            "answer transaction": f"mean {answer * 1000:.2f} ms over {answers}",
        }
        if batches:
            extra_lines["archive batch"] = (
                f"mean {batch * 1000:.1f} ms over {batches} batches (max {max_bucket(b, a, txns, archive_label)})")
        extra_lines["finished contracts in the table"] = (
            f"{left_before} before the daemon started, {left['start']} / {left['stop']} at the window's start / "
            f"end ({(left['start'] - left['stop']) / seconds:.0f} archived/s in the window), {left_after} after "
            f"it ({(left_before - left_after) / elapsed:.0f} archived/s over the {elapsed:.0f} s the daemon ran)"
            if left_before != left_after else f"{left_before} (none archived)")
        figures = report(f"phase {name}: {args.farmers} v0 farmers, {args.db}", stats, seconds, extra_lines)
        figures.update(cpu_per_request_ms=node_cpu / max(stats.requests, 1) * 1000, tick_ms=tick * 1000,
                       left=left_after)
        return figures


def main(argv: list[str] | None = None) -> int:
    ap = farmers.parser()
    ap.description = __doc__.splitlines()[0]
    ap.add_argument("--finished", type=int, default=1_000_000, help="finished contracts in the table at the start")
    ap.add_argument("--rounds", type=int, default=2, help="A/B rounds, alternated")
    ap.add_argument("--fast", action="store_true",
                    help="phase B archives at 2,000/s (archive_interval 1, archive_batches 4) instead of the defaults")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = ap.parse_args(["v0", "--spawn", *argv])
    if args.quick:
        args.finished, args.rounds = min(args.finished, 5000), 1
    args.farmers = args.farmers or (2 if args.quick else 50)
    args.contracts = args.contracts or (3 if args.quick else 10)
    if args.quick:
        args.duration, args.warmup, args.processes, args.challenge_batch = min(args.duration, 2.0), 0.5, 1, 100
    args.interval = max(args.interval or 0, 2)
    args.archive = ["--archive-interval", "1"] if args.fast or args.quick else []
    print(f"machine: {machine()}; the load generator and the daemon share these cores")
    with tempfile.TemporaryDirectory(prefix="dtx-archive-") as tmp:
        db = farmers.mysql_url() if args.db == "mysql" else f"sqlite:///{tmp}/data/downstream.db"
        data_dir = os.path.join(tmp, "data")
        print(f"database: {farmers.engine_version(db)}")
        took = farmers.prepare_v0(db, data_dir, args.contracts, args.farmers, args.interval, args.challenge_batch)
        took += fill_finished(db, args.finished, time.time())
        print(f"setup: {args.contracts} stored files, {args.finished} finished contracts of {OLD_TOKENS} old tokens "
              f"in {took:.1f} s")
        before, _ = totals(db)
        runs: list[tuple[dict, dict]] = []
        for r in range(1, args.rounds + 1):
            a = phase(f"A{r} (archiving off)", args, db, data_dir, tmp, ["--contract-retention", "0"])
            end_active(db, time.time())  # phase B's farmers get contracts of their own on the same files
            b = phase(f"B{r} (archiving on)", args, db, data_dir, tmp,
                      ["--contract-retention", str(DAY), *args.archive])
            runs.append((a, b))
            if r < args.rounds:
                end_active(db, time.time())
        after, active_b = totals(db)
        old = {t: v for t, v in after.items() if t in before}
        print("== totals")
        print(f"   old tokens' totals (contracts, passes, fails, misses) unchanged: {old == before}")
        print(f"   active contracts after the last phase B: {len(active_b)} (its {args.farmers} farmers × "
              f"{args.contracts} contracts)")
        print("== B (archiving on) against A (off), alternated in one session")
        for r, (a, b) in enumerate(runs, 1):
            print(f"   round {r}: requests/s {b['requests_s']:.0f} / {a['requests_s']:.0f};  p50 {b['p50_ms']:.1f} / "
                  f"{a['p50_ms']:.1f} ms;  p99 {b['p99_ms']:.1f} / {a['p99_ms']:.1f} ms;  CPU per request "
                  f"{b['cpu_per_request_ms']:.2f} / {a['cpu_per_request_ms']:.2f} ms;  timer pass mean "
                  f"{b['tick_ms']:.1f} / {a['tick_ms']:.1f} ms")
        print(f"   finished contracts left: {runs[-1][1]['left']} of {args.finished}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
