"""What the tests' databases cost to set up (docs/testing.md, "Test databases"): the same test files
run twice by pytest, first with every test's database built from nothing
(``DOWNSTREAM_TEST_FRESH_DB=1``: MySQL dropped, created and upgraded, SQLite's steps run on a new
file), then as the suite runs them (the session's upgraded database handed out again). Printed for
each run: the wall time, and per engine the tests' set-up time (pytest's ``--durations``: the
fixtures, where most tests' database is made) and call time (where the others make it: a test body
that calls ``open_test_db``), summed, and their medians.

Usage: DOWNSTREAM_TEST_MYSQL_URL=mysql://user:pw@host:port/db python bench/db_setup.py [--quick] [FILE ...]
(default files: tests/test_db_stores.py tests/test_api_v0.py tests/test_reputation.py; --quick:
tests/test_database.py; without the URL, SQLite only; the MySQL database named is dropped and
re-created)
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FILES = ["tests/test_db_stores.py", "tests/test_api_v0.py", "tests/test_reputation.py"]
DURATION = re.compile(r"^(\d+\.\d+)s (setup|call)\s+(\S+)$")


def run(files: list[str], fresh: bool) -> tuple[float, dict[tuple[str, str], list[float]], str]:
    env = dict(os.environ, DOWNSTREAM_TEST_FRESH_DB="1" if fresh else "0")
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "--durations=0",
                           "--durations-min=0", *files], cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.stdout.write(done.stdout[-3000:] + done.stderr[-3000:])
        raise SystemExit(f"pytest failed ({done.returncode})")
    times: dict[tuple[str, str], list[float]] = {(e, p): [] for e in ("mysql", "sqlite") for p in ("setup", "call")}
    for line in done.stdout.splitlines():
        m = DURATION.match(line.strip())
        if m:
            params = m.group(3).rpartition("[")[2]
            engine = "mysql" if re.search(r"\bmysql\b", params) else "sqlite" if re.search(r"\bsqlite\b", params) \
                else None
            if engine:
                times[engine, m.group(2)].append(float(m.group(1)))
    summary = done.stdout.strip().splitlines()[-1]
    return wall, times, summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="*")
    parser.add_argument("--quick", action="store_true", help="tests/test_database.py only")
    args = parser.parse_args()
    files = args.files or (["tests/test_database.py"] if args.quick else FILES)
    load = os.getloadavg()
    print(f"files: {' '.join(files)}; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    if not os.environ.get("DOWNSTREAM_TEST_MYSQL_URL"):
        print("(DOWNSTREAM_TEST_MYSQL_URL not set: SQLite only)")
    for label, fresh in (("built from nothing per test (DOWNSTREAM_TEST_FRESH_DB=1)", True),
                         ("handed out again (the suite's way)", False)):
        wall, times, summary = run(files, fresh)
        print(f"{label}: wall {wall:.1f} s ({summary})")
        for (engine, phase), found in times.items():
            if found:
                print(f"  {engine:6s} {phase:5s} of {len(found):4d} tests: total {sum(found):7.2f} s, "
                      f"median {statistics.median(found) * 1000:7.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
