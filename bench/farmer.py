"""The farmer client's cost: proofs per farmer CPU-second, its memory, and whether it answers every
challenge in time, at 1,000 and 10,000 contracts.

Against the real daemon (``twistd -n downstream`` on SQLite, in a temporary directory) with a seeded
pool of N small chunks: ``downstream-farmer`` (a subprocess, pinned to one core when the machine
has two or more; the daemon on another) takes N v1 contracts, then farms for a measured window of
whole intervals. Printed per N: the time to take and store the N contracts (the node encodes its
pool meanwhile: the farmer asks again every second until it has them all), the proofs the node
counted in the window, the farmer's CPU seconds in it (``/proc``), proofs per farmer CPU-second,
the farmer's RSS (now and peak), and the node's verdict on the window (misses, fails, contracts
still active: every challenge answered before its deadline or not). Also the cost of one proof
alone (``chunks.prove_seeded``), for scale.

Usage: python bench/farmer.py [--contracts 1000,10000] [--interval 60] [--intervals 2] [--chunk 4096] [--quick]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadgen import ROOT, Spawned, proc_cpu, proc_status  # noqa: E402

from downstream_tx.bitcoin import address_from_pubkey  # noqa: E402

CHUNK = 4096
MIB = 1 << 20


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())


def address() -> str:
    import coincurve

    return address_from_pubkey(coincurve.PrivateKey(b"\x05" * 32).public_key.format())


def pin(pid: int, cpu: int) -> bool:
    try:
        if len(os.sched_getaffinity(0)) > 1:
            os.sched_setaffinity(pid, {cpu})
            return True
    except (AttributeError, OSError):
        pass
    return False


def measure(n: int, interval: float, intervals: int, work: Path, chunk: int = CHUNK) -> dict:
    challenges = 64  # more than the contracts live through in the run
    node = Spawned.daemon(work / "node", [
        "--data-dir", str(work / "node" / "data"), "--tick", "1", "--seeded-interval", str(int(interval)),
        "--seeded-pool", f"{chunk}:{n}", "--seeded-challenges", str(challenges), "--max-chunks-per-request", "1000",
        "--max-size-per-address", str(2 * n * chunk), "--max-tokens-per-ip", "0", "--token-rate", "0",
        "--vetting-audits", "0", "--stats-interval", "30"], timeout=120)
    node.start()
    farmer = None
    try:
        pinned = pin(node.pid, 1)
        fwork = work / "farmer"
        fwork.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOWNSTREAM_")}
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        argv = [sys.executable, "-m", "downstream_tx.farmer", node.url, "--address", address(), "--protocol", "v1",
                "--size", str(n * chunk), "--chunk-retry", "1", "--log-path", "farmer.log", "--quiet"]
        farmer = subprocess.Popen(argv, cwd=fwork, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        pinned = pin(farmer.pid, 0) and pinned
        started = time.monotonic()
        history = fwork / "data" / "history.json"
        while not history.exists():
            if farmer.poll() is not None or time.monotonic() - started > 120:
                raise RuntimeError("the farmer got no token:\n" + (fwork / "farmer.log").read_text()[-3000:])
            time.sleep(0.2)
        token = json.loads(history.read_text())["nodes"][node.url]["token"]
        show = f"{node.url}/api/downstream/v1/status/show/{hashlib.sha256(bytes.fromhex(token)).hexdigest()[:20]}"
        while get(show)["contracts"] < n:
            if farmer.poll() is not None or time.monotonic() - started > 900:
                raise RuntimeError("the farmer did not take its contracts:\n" +
                                   (fwork / "farmer.log").read_text()[-3000:])
            time.sleep(0.5)
        onboard = time.monotonic() - started
        # one interval to settle (every contract through a whole challenge cycle), then the window
        time.sleep(interval)
        before, cpu0, t0 = get(show), proc_cpu(farmer.pid), time.monotonic()
        time.sleep(intervals * interval)
        after, cpu1, t1 = get(show), proc_cpu(farmer.pid), time.monotonic()
        rss, peak = proc_status(farmer.pid, "VmRSS"), proc_status(farmer.pid, "VmHWM")
        proofs = after["heartbeats"] - before["heartbeats"]
        cpu = cpu1 - cpu0
        ended = [line for line in (fwork / "farmer.log").read_text().splitlines() if " ended: " in line]
        return {"n": n, "onboard_s": onboard, "window_s": t1 - t0, "proofs": proofs, "expected": n * intervals,
                "cpu_s": cpu, "per_cpu_s": proofs / cpu if cpu else float("inf"), "rss": rss, "peak": peak,
                "misses": after["audits"]["misses"], "fails": after["audits"]["fails"],
                "contained": after["contained"], "contracts": after["contracts"], "dropped": len(ended),
                "pinned": pinned, "farmer_load": cpu / (t1 - t0)}
    finally:
        if farmer is not None and farmer.poll() is None:
            farmer.terminate()
            try:
                farmer.wait(60)
            except subprocess.TimeoutExpired:
                farmer.kill()
                farmer.wait()
        node.stop()


def prove_alone(size: int, count: int) -> float:
    """Microseconds of CPU per ``prove_seeded`` on a stored chunk of ``size`` bytes."""
    from downstream_tx.farmer.chunks import prove_seeded, write_seeded
    from downstream_tx.heartbeat import Merkle, encode_seeded

    key = os.urandom(32)
    seed = os.urandom(16).hex()
    tag, state = encode_seeded(key, seed, size, n=64, check_fraction=0.01, timestamp=0.0)
    with tempfile.TemporaryDirectory() as tmp:
        chunk, tagfile = os.path.join(tmp, "c.chunk"), os.path.join(tmp, "c.tag")
        write_seeded(chunk, tagfile, seed, size, tag.to_dict())
        challenge = Merkle(0.01, key).gen_challenge(state).to_dict()
        start = time.process_time()
        for _ in range(count):
            prove_seeded(chunk, tagfile, challenge, size)
        return (time.process_time() - start) / count * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--contracts", default="1000,10000", help="contract counts, comma-separated")
    ap.add_argument("--interval", type=int, default=60, help="the node's seeded_interval (s)")
    ap.add_argument("--intervals", type=int, default=2, help="intervals in the measured window")
    ap.add_argument("--chunk", type=int, default=CHUNK, help=f"chunk size in bytes (default {CHUNK}; the farmer's "
                    "memory should not depend on it)")
    ap.add_argument("--quick", action="store_true", help="50 contracts, 5 s interval (the suite's smoke run)")
    args = ap.parse_args()
    counts = [int(x) for x in args.contracts.split(",")]
    if args.quick:
        counts, args.interval, args.intervals = [50], 5, 1
    print(f"one proof alone (prove_seeded): {prove_alone(CHUNK, 2000):.0f} µs on a 4 KiB chunk, "
          f"{prove_alone(MIB, 500):.0f} µs on a 1 MiB chunk (check fraction 0.01)")
    print(f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}; node interval {args.interval:g} s, "
          f"window {args.intervals} interval(s), {args.chunk}-byte chunks, SQLite")
    print(f"{'contracts':>9} {'take s':>7} {'proofs':>7} {'of':>7} {'farmer CPU s':>12} {'proofs/CPU-s':>12} "
          f"{'core %':>6} {'RSS MiB':>8} {'peak MiB':>8} {'misses':>6} {'fails':>5} {'dropped':>7} in time")
    for n in counts:
        work = Path(tempfile.mkdtemp(prefix="bench-farmer-"))
        try:
            r = measure(n, args.interval, args.intervals, work, args.chunk)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        in_time = r["misses"] == 0 and r["fails"] == 0 and r["dropped"] == 0 and r["contracts"] == n
        print(f"{r['n']:>9} {r['onboard_s']:>7.1f} {r['proofs']:>7} {r['expected']:>7} {r['cpu_s']:>12.2f} "
              f"{r['per_cpu_s']:>12.0f} {100 * r['farmer_load']:>6.1f} {(r['rss'] or 0) / MIB:>8.1f} "
              f"{(r['peak'] or 0) / MIB:>8.1f} {r['misses']:>6} {r['fails']:>5} {r['dropped']:>7} "
              f"{'yes' if in_time else 'NO'}{'' if r['pinned'] else ' (not pinned: one core only)'}")


if __name__ == "__main__":
    main()
