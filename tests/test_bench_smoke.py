"""Each benchmark runs once at a tiny size (``--quick``) so it cannot rot. No timing is asserted:
only that it completes and prints its figures."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_bench(*args: str, timeout: float = 240.0) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOWNSTREAM_") or k == "DOWNSTREAM_TEST_MYSQL_URL"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
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


@pytest.mark.e2e
@pytest.mark.parametrize("mode,figure", [("v1", "proofs/s"), ("v0", "passes/s")])
def test_farmers_bench(mode, figure):
    out = run_bench("bench/farmers.py", mode, "--spawn", "--quick")
    assert figure in out and "requests/s" in out and "p99" in out and "daemon peak RSS" in out


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


@pytest.mark.e2e
def test_farmer_client_bench():
    out = run_bench("bench/farmer.py", "--quick")
    assert "one proof alone" in out and "proofs/CPU-s" in out and "RSS MiB" in out
    assert out.strip().splitlines()[-1].split()[-1] == "yes"  # every challenge answered in time
