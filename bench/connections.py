"""Daemon memory under clients that pipeline requests and never read the answers.

Two attacks on a node holding ``--farmers`` farmers (tokens), each for ``--seconds``:

* **pipeline**: one connection sends ``--kib`` KiB of pipelined ``GET <path>`` (default the whole
  v1 status list, about 1 MB an answer with 3,000 farmers) and never reads;
* **dashboard**: ``--connections`` connections each pipeline ``--kib`` KiB of
  ``GET /dashboard?limit=200`` and never read.

Meanwhile an honest client asks ``/health`` and ``/status/show/<farmer id>`` once a second. Prints
the daemon's RSS every few seconds, its peak, what the honest client got, and the RSS once the attack's
connections are closed. ``--tree DIR`` runs the daemon of another checkout (e.g. the code before a
change: ``git archive main | tar -x -C /tmp/before``) on the same database.

Usage: python bench/connections.py [--farmers 3000] [--seconds 30] [--kib 120] [--tree DIR] [--quick]
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadgen import Spawned, proc_status  # noqa: E402
from timers import fresh  # noqa: E402

MIB = 1 << 20
STATUS_LIST = "/api/downstream/v1/status/list/"
DASHBOARD = "/dashboard?limit=200"


def fill_farmers(url: str, n: int) -> list[str]:
    """A fresh database holding ``n`` farmers (tokens, no contracts); their farmer ids."""
    engine, conn, txn = fresh(url)
    ids = [os.urandom(10).hex() for _ in range(n)]
    txn.executemany("INSERT INTO tokens (token_hash, farmer_id, address, created) VALUES (?, ?, ?, 0)",
                    [(os.urandom(32), farmer_id, "1" + os.urandom(16).hex(), ) for farmer_id in ids])
    conn.commit()
    conn.close()
    return ids


class Pipeliner:
    """One connection that sends ``size`` bytes of pipelined GETs of ``path`` (as fast as the node
    reads them) and never reads an answer (its receive buffer is as small as the kernel allows)."""

    def __init__(self, port: int, path: str, size: int):
        one = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
        self.data = one * max(1, size // len(one))
        self.sent = 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.connect(("127.0.0.1", port))
        self.sock.setblocking(False)

    def push(self) -> None:
        """Send what the connection takes now."""
        while self.sent < len(self.data):
            try:
                n = self.sock.send(self.data[self.sent:self.sent + 65536])
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # the node closed the connection
                self.sent = len(self.data)
                return
            self.sent += n

    def close(self) -> None:
        self.sock.close()


def honest(url: str, farmer_id: str) -> tuple[bool, float]:
    """One honest round (``/health``, ``/status/show``): (both answered 200, seconds)."""
    started = time.perf_counter()
    ok = True
    for path in ("/health", f"/api/downstream/v1/status/show/{farmer_id}"):
        try:
            with urllib.request.urlopen(url + path, timeout=30) as r:
                r.read()
                ok = ok and r.status == 200
        except (urllib.error.URLError, OSError):
            ok = False
    return ok, time.perf_counter() - started


def attack(daemon: Spawned, farmer_id: str, path: str, connections: int, size: int, seconds: float) -> dict:
    """Run one attack for ``seconds``; RSS samples, honest rounds, RSS after closing."""
    start_rss = proc_status(daemon.pid, "VmRSS") or 0
    clients = [Pipeliner(daemon.port, path, size) for _ in range(connections)]
    samples: list[tuple[float, int]] = []
    rounds: list[tuple[bool, float]] = []
    started = time.monotonic()
    while time.monotonic() - started < seconds:  # the load runs for a fixed time, as a benchmark does
        for c in clients:
            c.push()
        rounds.append(honest(daemon.url, farmer_id))
        samples.append((time.monotonic() - started, proc_status(daemon.pid, "VmRSS") or 0))
        time.sleep(max(0.0, 1.0 - rounds[-1][1]))
    sent = sum(c.sent for c in clients)
    for c in clients:
        c.close()
    closed = time.monotonic()
    while time.monotonic() - closed < min(5.0, seconds):  # let the node notice the closed connections
        rounds.append(honest(daemon.url, farmer_id))
        time.sleep(0.5)
    return {"start": start_rss, "samples": samples, "rounds": rounds, "sent": sent,
            "after_close": proc_status(daemon.pid, "VmRSS") or 0}


def report(name: str, r: dict) -> None:
    peak = max([s for _, s in r["samples"]] + [r["start"]])
    ok = sum(1 for good, _ in r["rounds"] if good)
    slowest = max(t for _, t in r["rounds"])
    shown = [f"{t:.0f}s {s / MIB:.0f}" for t, s in r["samples"][::max(1, len(r["samples"]) // 10)]]
    print(f"{name}: sent {r['sent'] / 1024:.0f} KiB of pipelined requests; RSS MiB over time: {', '.join(shown)}")
    print(f"{name}: RSS before {r['start'] / MIB:.0f} MiB, peak {peak / MIB:.0f} MiB "
          f"(+{(peak - r['start']) / MIB:.0f}), after the connections closed {r['after_close'] / MIB:.0f} MiB; "
          f"honest rounds ok {ok}/{len(r['rounds'])}, slowest {slowest:.2f} s")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--farmers", type=int, default=3000)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--kib", type=int, default=120, help="KiB of pipelined requests per connection")
    parser.add_argument("--connections", type=int, default=40, help="connections of the dashboard attack")
    parser.add_argument("--path", default=STATUS_LIST, help="what the pipeline attack asks for")
    parser.add_argument("--tree", help="run the daemon of this checkout instead of this one")
    parser.add_argument("--quick", action="store_true", help="300 farmers, 3 s per attack (for the test suite)")
    args = parser.parse_args(argv)
    if args.quick:
        args.farmers, args.seconds, args.kib, args.connections = 300, 3.0, 16, 4
    print(f"connection attacks: {args.farmers} farmers, {args.seconds:g} s each, {args.kib} KiB pipelined "
          f"per connection{', code of ' + args.tree if args.tree else ''}")
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        data.mkdir(mode=0o700)
        ids = fill_farmers("sqlite:///" + str(data / "downstream.db"), args.farmers)
        env = {"PYTHONPATH": str(Path(args.tree).resolve())} if args.tree else None
        for name, path, connections in (("pipeline", args.path, 1), ("dashboard", DASHBOARD, args.connections)):
            daemon = Spawned.daemon(Path(tmp) / name, ["--data-dir", str(data), "--seeded-pool", "4096:0"],
                                    env=env).start()
            try:
                honest(daemon.url, ids[0])  # warm up
                report(f"{name} ({connections} x GET {path})",
                       attack(daemon, ids[0], path, connections, args.kib * 1024, args.seconds))
            finally:
                daemon.stop()


if __name__ == "__main__":
    main()
