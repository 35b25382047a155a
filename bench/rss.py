"""Daemon memory with many contracts.

Fills a fresh SQLite database with N active v0 contracts (1% due now, the rest due over the next
minute, as bench/timers.py does), starts the real daemon on it, lets its timers run for a while
and prints its peak RSS (VmHWM). Memory must stay flat as contracts grow: no job loads all
contracts into Python.

Usage: python bench/rss.py [--contracts 1000000] [--seconds 20] [--quick]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import timers  # noqa: E402
from loadgen import Spawned, proc_status  # noqa: E402

MIB = 1 << 20


def measure(n: int, seconds: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        data.mkdir(mode=0o700)
        engine, conn, txn = timers.fresh("sqlite:///" + str(data / "downstream.db"))
        started = time.perf_counter()
        due = timers.fill(conn, txn, n, 0.01, now=time.time())
        fill_time = time.perf_counter() - started
        conn.close()
        result = run_daemon(Path(tmp), seconds)
    return {"contracts": n, "due": due, "fill_s": fill_time, **result}


def measure_prepared(db: Path, due: int, seconds: float, tree: str | None = None) -> dict:
    """The daemon (of the code in ``tree``, default this one) on a copy of a prepared SQLite
    database (bench/timers.py --big)."""
    with tempfile.TemporaryDirectory(dir=db.parent) as tmp:
        data = Path(tmp) / "data"
        data.mkdir(mode=0o700)
        shutil.copyfile(db, data / "downstream.db")
        os.chmod(data / "downstream.db", 0o600)
        return {"due": due, **run_daemon(Path(tmp), seconds, tree)}


def run_daemon(tmp: Path, seconds: float, tree: str | None = None) -> dict:
    """Start the daemon on ``tmp/data``, let its timers run for ``seconds`` while /health is asked
    once a second; its peak and final RSS, the 503s, and the contract timer lines it logged."""
    daemon = Spawned.daemon(tmp / "run", ["--data-dir", str(tmp / "data"), "--tick", "1", "--seeded-pool", "4096:0",
                                          "--stats-interval", "5", "--challenge-low-water", "0"],
                            env={"PYTHONPATH": tree} if tree else None).start()
    try:
        deadline = time.monotonic() + seconds
        unhealthy = 0
        while time.monotonic() < deadline:  # the daemon's timers run meanwhile; keep it answering
            try:
                urllib.request.urlopen(daemon.url + "/health", timeout=10).read()
            except urllib.error.HTTPError:  # 503: the database did not answer within health_timeout
                unhealthy += 1
            time.sleep(1)
        peak = daemon.peak_rss() or 0
        current = proc_status(daemon.pid, "VmRSS") or 0
        passes = [line.split("timer contracts: ", 1)[1] for line in daemon.log().splitlines()
                  if "timer contracts: " in line]
    finally:
        daemon.stop()
    return {"peak_mib": peak / MIB, "rss_mib": current / MIB, "unhealthy": unhealthy, "passes": passes}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contracts", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--quick", action="store_true", help="10,000 contracts for 3 s (for the test suite)")
    args = parser.parse_args(argv)
    n, seconds = (10_000, 3.0) if args.quick else (args.contracts, args.seconds)
    print(f"daemon memory: SQLite, {n} active v0 contracts, timers running for {seconds:g} s")
    r = measure(n, seconds)
    print(f"contracts {r['contracts']:>9}  due at start {r['due']:>7}  fill {r['fill_s']:.1f} s  "
          f"peak RSS {r['peak_mib']:.1f} MiB  RSS at the end {r['rss_mib']:.1f} MiB  "
          f"/health 503s {r['unhealthy']}")


if __name__ == "__main__":
    main()
