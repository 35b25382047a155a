"""Each benchmark runs once at a tiny size (``--quick``) so it cannot rot. No timing is asserted:
only that it completes and prints its figures."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_bench(*args: str, timeout: float = 240.0, extra_env: dict[str, str] | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOWNSTREAM_") or k == "DOWNSTREAM_TEST_MYSQL_URL"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra_env or {})
    done = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_heartbeat_bench():
    out = run_bench("bench/heartbeat.py", "--quick")
    assert "ratio batch/raw" in out and "ratio encode/raw" in out and "verifies/s" in out


def test_thread_hop_bench():
    out = run_bench("bench/thread_hop.py", "--quick")
    assert "pool (Database.run)" in out and "inline (Database.run_short)" in out and "thread hop costs" in out


def test_v0_requests_bench():
    out = run_bench("bench/v0_requests.py", "--quick")
    assert "GET /challenge, a pass" in out and "bare twisted.web fixed JSON" in out and "× bare" in out


def test_v1_cycle_bench():
    out = run_bench("bench/v1_cycle.py", "--quick")
    assert "node CPU per verified proof: refresh" in out and "10 verified proofs" in out


def test_timers_bench_sqlite():
    out = run_bench("bench/timers.py", "--quick", "--mysql", "")
    assert "sqlite" in out and "tick s" in out


def test_timers_bench_misses_over_many_farmers_sqlite():
    out = run_bench("bench/timers.py", "--quick", "--mysql", "", "--farmers", "3", "--due", "0.1")
    assert "misses over 3 farmers" in out and "tick s" in out


@pytest.mark.mysql
def test_lost_commits_bench():
    """MariaDB only (SQLite records nothing); in a database of its own next to the test database."""
    from downstream_tx.db.url import parse_db_url
    from support import MYSQL_URL

    out = run_bench("bench/lost_commits.py", "--quick",
                    extra_env={"DOWNSTREAM_BENCH_DB": parse_db_url(MYSQL_URL).database + "_bench"})
    assert "answer shape  difference" in out and "batch of 50   difference" in out and "node CPU" in out


@pytest.mark.mysql
def test_capacity_bench():
    """MariaDB only; in a database of its own next to the test database (dropped and re-created)."""
    from downstream_tx.db.url import parse_db_url
    from support import MYSQL_URL

    database = parse_db_url(MYSQL_URL).database
    url = MYSQL_URL.rsplit("/", 1)[0] + f"/{database}_capacity"
    admin = os.environ.get("DOWNSTREAM_TEST_MYSQL_ADMIN_URL")  # sees every server thread (else: only its own)
    out = run_bench("bench/capacity.py", "--quick", "--mysql", url, *(["--admin", admin] if admin else []))
    for operation in ("assign", "answer", "tick answered", "tick miss", "repair", "challenges 4 MiB", "v1 proof"):
        assert f"\n{operation} " in out, operation
    assert "bytes per row" in out and "contracts" in out
    assert "100,000  100,000,000" in out  # the model's largest size


def test_capacity_check_summary(tmp_path):
    """bench/capacity_check.py's summary of saved runs: each size's median, the ratio of the
    medians, a mark on a figure outside 25% (no database: runs saved by hand)."""
    import json

    def run(size: int, i: int, db_ms: float, node_ms: float, load: float) -> None:
        per_op = {"answer": {"node_ms": node_ms, "db_ms": db_ms, "rows": 4.0, "rows_read": 10.0, "wall_ms": 5.0,
                             "pool_reads": 0.0, "redo_bytes": 0.0}}
        sizes = {"contracts": [size, size * 400, 0]}
        (tmp_path / f"{size}-{i}.json").write_text(json.dumps(
            {"per_op": per_op, "per_row": {"contracts": 400.0}, "sizes": sizes, "load": "0.5 0.5 0.5",
             "load_start": load}))

    for i, (small, big) in enumerate([(2.0, 2.2), (1.0, 3.0), (2.2, 2.4)]):  # medians 2.0 and 2.4: 1.20
        run(1000, i, small, 1.0, 0.4)
        run(10000, i, big, 1.0 + 0.5 * i, 0.6)  # node median 1.5: 1.50, outside
    out = run_bench("bench/capacity_check.py", "--summary", str(tmp_path))
    db = next(line for line in out.splitlines()[out.splitlines().index("-- database CPU ms"):]
              if "answer" in line)
    node = next(line for line in out.splitlines()[out.splitlines().index("-- node CPU ms"):]
                if "answer" in line)
    assert db.split()[-3:] == ["1.20", "paired", "1.10"] and "(1.000-2.200)" in db, db  # 1.10, 3.00, 1.09
    assert node.split()[-4:] == ["1.50", "*", "paired", "1.50"], node
    per_node = next(line for line in out.splitlines()[next(i for i, x in enumerate(out.splitlines())
                                                            if x.startswith("-- database CPU / node")):]
                    if "answer" in line)
    assert per_node.split()[-3:] == ["1.00", "paired", "1.10"], per_node  # 2.2, 2.0, 1.2 against 2.0, 1.0, 2.2
    assert "measured / predicted 1.00" in out and "0.40, 0.40, 0.40" in out


@pytest.mark.e2e
@pytest.mark.parametrize("mode,figure", [("v1", "proofs/s"), ("v0", "passes/s")])
def test_farmers_bench(mode, figure):
    out = run_bench("bench/farmers.py", mode, "--spawn", "--quick")
    assert figure in out and "requests/s" in out and "p99" in out and "daemon peak RSS" in out


@pytest.mark.e2e
def test_connections_bench():
    out = run_bench("bench/connections.py", "--quick")
    assert "pipeline (1 x GET" in out and "dashboard (4 x GET" in out and "after the connections closed" in out


@pytest.mark.e2e
def test_ceiling_bench():
    out = run_bench("bench/ceiling.py", "--quick")
    assert "bare twisted.web fixed JSON" in out and "v0 against the ceiling" in out
    assert "CPU µs/request" in out and "Little's law" in out


@pytest.mark.e2e
def test_rss_bench():
    out = run_bench("bench/rss.py", "--quick")
    assert "peak RSS" in out and "contracts" in out


@pytest.mark.e2e
def test_archive_bench():
    out = run_bench("bench/archive.py", "--quick")
    assert "phase A1 (archiving off)" in out and "phase B1 (archiving on)" in out
    assert "unchanged: True" in out and "archive batch" in out


def test_bombs_parse_bench():
    out = run_bench("bench/bombs.py", "--parse", "--quick")
    assert "inline" in out and "worker" in out and "cooperative" in out and "longest stall ms" in out


@pytest.mark.e2e
def test_bombs_bench():
    out = run_bench("bench/bombs.py", "--quick")
    assert "/health:" in out and "honest farmer:" in out and "bomb requests:" in out


@pytest.mark.e2e
def test_farmer_client_bench():
    out = run_bench("bench/farmer.py", "--quick")
    assert "one proof alone" in out and "proofs/CPU-s" in out and "RSS MiB" in out
    assert out.strip().splitlines()[-1].split()[-1] == "yes"  # every challenge answered in time


def test_stats_bench_sqlite():
    out = run_bench("bench/stats.py", "--quick", "--mysql", "")
    assert "stats job" in out and "status list page" in out and "wall s" in out


def test_db_setup_bench():
    """SQLite only (a MySQL run drops the database it names): the pytest runs it makes, timed."""
    out = run_bench("bench/db_setup.py", "--quick", extra_env={"DOWNSTREAM_TEST_MYSQL_URL": ""})
    assert "built from nothing per test" in out and "handed out again" in out and "sqlite call" in out


def test_reputation_simulator():
    out = run_bench("bench/reputation_sim.py", "--quick")
    assert "| honest, outages up to 24 h/week | 20 | 0.0% (0) |" in out  # no honest farmer disqualified
    assert "| cheater, lost 50% | 5 | 100.0% (5) |" in out and "silent for good after day 1" in out


def test_prune_bench():
    out = run_bench("bench/prune.py", "--quick")
    assert "deleted/s" in out and "idle walk" in out and ": ok" in out
