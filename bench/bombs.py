"""Reactor stalls under body bombs: `/health` latency and an honest v1 farmer's answers while N
senders post small gzip bodies that inflate to a lot of invalid JSON.

The real daemon (SQLite in a temp directory) on a loopback port; N sender processes each post, in a
loop, a ~16 KB gzip body that inflates to 16 MiB of invalid JSON (``{"x": [0,0,0,…``, the costliest
shape for a streaming scan) to ``POST /api/downstream/v1/answer/<token>`` — a random token, or with
``--valid-token`` a real one (a farmer sending the bomb). Meanwhile a prober asks ``GET /health``
every 0.1 s and an honest farmer holds ``--contracts`` contracts, refreshes their challenges when due
and answers them (the answer latency is the time from sending the proofs to the report). It prints
the /health latency (median, p99, max), the requests that made it through, the honest farmer's
answer latency and what it was told (``ok`` or anything else), and the bomb requests' statuses.

  python bench/bombs.py [--senders 4] [--duration 20] [--valid-token] [--tree DIR]
  python bench/bombs.py --senders 0          # the same without bombs (the baseline)
  python bench/bombs.py --valid-token --plain   # a farmer uploading the inflated 16 MiB itself

``--tree DIR`` runs the daemon from another checkout (e.g. ``git archive`` of main) for a before /
after comparison; the farmer and the senders are this tree's.

  python bench/bombs.py --parse              # what reading an honest batch costs, three ways

``--parse`` measures, in this process on a real reactor, honest ``/answer`` bodies of 50 to 5,000
proofs read three ways: orjson on the reactor thread (the node's path up to 128 KiB), the streaming
parser on a worker thread (its path above), and the same parser fed to the reactor a slice per
reactor turn (cooperative). For each: CPU of the process, wall time, and the reactor's longest
stall while it ran (a 1 ms LoopingCall records its largest gap).
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson  # noqa: E402
from loadgen import Spawned  # noqa: E402

ADDRESS = "19qVgG8C6eXwKMMyvVegsi3xCsKyk3Z3jV"
V1 = "/api/downstream/v1"
CHUNK = 4096


def bomb(inflated: int) -> bytes:
    """A gzip body inflating to ``inflated`` bytes of JSON that never ends (a scan reads it all)."""
    return gzip.compress(b'{"x": [' + b"0," * ((inflated - 8) // 2), 9)


class Client:
    """One keep-alive HTTP/1.1 connection (reopened after an error)."""

    def __init__(self, port: int, timeout: float = 120.0):
        self.port, self.timeout = port, timeout
        self.conn: http.client.HTTPConnection | None = None

    def call(self, method: str, path: str, body: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
            try:
                self.conn.request(method, path, body=body, headers=headers or {})
                resp = self.conn.getresponse()
                data = resp.read()
                if resp.getheader("connection", "").lower() == "close":
                    self.conn.close()
                    self.conn = None
                return resp.status, data
            except (OSError, http.client.HTTPException):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")


def sender(port: int, token: str, body: bytes, stop_at: float, out: mp.Queue) -> None:
    client = Client(port)
    statuses: dict[str, int] = {}
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    while time.monotonic() < stop_at:
        try:
            code, data = client.call("POST", f"{V1}/answer/{token or os.urandom(16).hex()}", body, headers)
            key = str(code)
        except (OSError, http.client.HTTPException) as e:
            key = type(e).__name__
        statuses[key] = statuses.get(key, 0) + 1
    out.put(statuses)


def prober(port: int, stop_at: float, latencies: list[float]) -> None:
    client = Client(port)
    while time.monotonic() < stop_at:
        started = time.monotonic()
        try:
            code, _ = client.call("GET", "/health")
        except (OSError, http.client.HTTPException):
            code = 0
        if code:
            latencies.append(time.monotonic() - started)
        time.sleep(max(0.0, 0.1 - (time.monotonic() - started)))


def prove(contract: dict, challenge: dict) -> dict:
    from downstream_tx.heartbeat import Challenge, Merkle, RandomIO, Tag

    return Merkle(0.01, b"").prove(RandomIO(contract["seed"], contract["size"]), Challenge.from_dict(challenge),
                                   Tag.from_dict(contract["tag"])).to_dict()


def farmer(port: int, token: str, contracts: list[dict], stop_at: float, results: dict) -> None:
    """Answer every contract's challenge once it is issued; refresh when due."""
    client = Client(port)
    by_id = {c["file_hash"]: c for c in contracts}
    challenges = {c["file_hash"]: c["challenge"] for c in contracts}
    due_at = time.monotonic()
    while time.monotonic() < stop_at:
        proofs = [{"file_hash": cid, "proof": prove(by_id[cid], ch)} for cid, ch in challenges.items()]
        started = time.monotonic()
        code, data = client.call("POST", f"{V1}/answer/{token}", orjson.dumps({"proofs": proofs}),
                                 {"Content-Type": "application/json", "Content-Encoding": "gzip"})
        results["latency"].append(time.monotonic() - started)
        if code != 200:
            results["told"][f"http {code}"] = results["told"].get(f"http {code}", 0) + 1
        else:
            for entry in orjson.loads(data)["report"]:
                told = entry.get("status") or entry.get("error")
                results["told"][told] = results["told"].get(told, 0) + 1
        due = [c for c in challenges]
        while time.monotonic() < stop_at:
            code, data = client.call("POST", f"{V1}/challenge/{token}", orjson.dumps({"hashes": due}),
                                     {"Content-Type": "application/json"})
            fresh = {e["file_hash"]: e for e in orjson.loads(data)["challenges"] if "challenge" in e} \
                if code == 200 else {}
            waits = [e["due"] for e in fresh.values() if e.get("answered")]
            news = {cid: e["challenge"] for cid, e in fresh.items() if not e.get("answered")}
            if news:
                challenges = news
                break
            due_at = time.monotonic() + (min(waits) if waits else 0.2)
            time.sleep(max(0.05, due_at - time.monotonic()))


def honest_body(proofs: int) -> bytes:
    from downstream_tx.heartbeat import Merkle, RandomIO

    merkle = Merkle(0.01, b"k")
    seed = os.urandom(32).hex()
    tag, state = merkle.encode(RandomIO(seed, CHUNK), 64, timestamp=1)
    proof = merkle.prove(RandomIO(seed, CHUNK), merkle.gen_challenge(state), tag).to_dict()
    return orjson.dumps({"proofs": [{"file_hash": i, "proof": proof} for i in range(proofs)]})


def measure_parsing(sizes: list[int], rounds: int) -> None:
    from twisted.internet import defer, reactor, task, threads

    from downstream_tx.http.bodies import SLICE, ItemScanner, decode_items

    async def inline(raw: bytes) -> int:
        return len(orjson.loads(raw)["proofs"])

    async def worker(raw: bytes) -> int:
        items = await threads.deferToThreadPool(reactor, reactor.getThreadPool(), decode_items, raw, "proofs",
                                                len(raw), 16)
        return len(items)

    async def cooperative(raw: bytes) -> int:
        scanner = ItemScanner("proofs")
        for start in range(0, len(raw), SLICE):
            if scanner.feed(raw[start:start + SLICE]):
                break
            await task.deferLater(reactor, 0, lambda: None)
        scanner.close()
        return len(scanner.items)

    async def run_all() -> None:
        gaps = {"last": time.monotonic(), "max": 0.0}

        def tick() -> None:
            now = time.monotonic()
            gaps["max"] = max(gaps["max"], now - gaps["last"])
            gaps["last"] = now

        ticker = task.LoopingCall(tick)
        ticker.start(0.001)
        print(f"{'proofs':>6} {'bytes':>10}  {'way':<12} {'CPU ms':>8} {'wall ms':>8} {'longest stall ms':>17}")
        for n in sizes:
            raw = honest_body(n)
            for name, way in (("inline", inline), ("worker", worker), ("cooperative", cooperative)):
                cpu, wall, stall = [], [], []
                for _ in range(rounds):
                    await task.deferLater(reactor, 0.01, lambda: None)
                    gaps["max"], gaps["last"] = 0.0, time.monotonic()
                    c0, w0 = time.process_time(), time.monotonic()
                    assert await way(raw) == n
                    cpu.append(time.process_time() - c0)
                    wall.append(time.monotonic() - w0)
                    stall.append(max(gaps["max"], time.monotonic() - gaps["last"]))
                print(f"{n:>6} {len(raw):>10,}  {name:<12} {statistics.median(cpu) * 1e3:>8.1f} "
                      f"{statistics.median(wall) * 1e3:>8.1f} {statistics.median(stall) * 1e3:>17.1f}")
        ticker.stop()

    sys.setswitchinterval(0.0005)  # as the daemon (NodeService.startService)
    task.react(lambda _: defer.ensureDeferred(run_all()))


def quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--senders", type=int, default=4)
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--contracts", type=int, default=10)
    ap.add_argument("--interval", type=int, default=3, help="the v1 challenge interval, s")
    ap.add_argument("--inflated", type=int, default=16 << 20, help="bytes each bomb inflates to")
    ap.add_argument("--valid-token", action="store_true", help="the senders use a real token")
    ap.add_argument("--plain", action="store_true", help="send the inflated body itself (no gzip)")
    ap.add_argument("--tree", help="run the daemon from this checkout's code")
    ap.add_argument("--parse", action="store_true", help="measure reading honest batches, three ways")
    ap.add_argument("--rounds", type=int, default=7, help="--parse: rounds per figure (the median is shown)")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.senders, args.duration, args.contracts, args.inflated, args.rounds = 1, 3.0, 2, 1 << 20, 1
    if args.parse:
        measure_parsing([50, 100] if args.quick else [50, 100, 500, 5000], args.rounds)
        return 0

    body = gzip.decompress(bomb(args.inflated)) if args.plain else bomb(args.inflated)
    env = {"PYTHONPATH": str(Path(args.tree).resolve())} if args.tree else None
    with tempfile.TemporaryDirectory(prefix="dtx-bombs-") as tmp:
        daemon = Spawned.daemon(Path(tmp), [
            "--data-dir", str(Path(tmp) / "data"), "--seeded-pool", f"{CHUNK}:{args.contracts + 2}",
            "--seeded-challenges", "16", "--seeded-interval", str(args.interval), "--max-tokens-per-ip", "0",
            "--token-rate", "0", "--max-chunks-per-request", "0", "--tick", "0.5"], env=env)
        with daemon:
            client = Client(daemon.port)
            deadline = time.monotonic() + 60
            token = ""
            while time.monotonic() < deadline:
                code, data = client.call("GET", f"{V1}/new/{ADDRESS}")
                token = orjson.loads(data)["token"]
                code, data = client.call("GET", f"{V1}/chunk/{token}/{CHUNK * args.contracts}")
                contracts = orjson.loads(data).get("chunks", []) if code == 200 else []
                if len(contracts) == args.contracts:
                    break
                time.sleep(0.5)  # the pool is being filled
            else:
                raise SystemExit("the seeded pool did not fill in 60 s")
            bomber = orjson.loads(client.call("GET", f"{V1}/new/{ADDRESS}")[1])["token"] if args.valid_token else ""
            cpu0 = daemon.cpu()
            started = time.monotonic()
            stop_at = started + args.duration
            out: mp.Queue = mp.Queue()
            senders = [mp.Process(target=sender, args=(daemon.port, bomber, body, stop_at, out))
                       for _ in range(args.senders)]
            for p in senders:
                p.start()
            latencies: list[float] = []
            results: dict = {"latency": [], "told": {}}
            threads = [threading.Thread(target=prober, args=(daemon.port, stop_at, latencies)),
                       threading.Thread(target=farmer, args=(daemon.port, token, contracts, stop_at, results))]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            bombs: dict[str, int] = {}
            for p in senders:
                for k, v in out.get(timeout=300).items():
                    bombs[k] = bombs.get(k, 0) + v
                p.join(timeout=60)
            wall = time.monotonic() - started
            cpu = daemon.cpu() - cpu0
    who = "with a real token" if args.valid_token else "with random tokens"
    what = f"{len(body):,} B plain" if args.plain else f"{len(body):,} B gzip -> {args.inflated:,} B"
    print(f"bombs: {args.senders} senders {who}, {what} each, "
          f"{wall:.1f} s, daemon CPU {cpu:.1f} s ({cpu / wall:.0%} of a core)"
          + (f", daemon code from {args.tree}" if args.tree else ""))
    print(f"  /health: {len(latencies)} answered, median {statistics.median(latencies) * 1e3:.1f} ms, "
          f"p99 {quantile(latencies, 0.99) * 1e3:.1f} ms, max {max(latencies) * 1e3:.1f} ms"
          if latencies else "  /health: none answered")
    lat = results["latency"]
    print(f"  honest farmer: {len(lat)} answers of {args.contracts} proofs, latency median "
          f"{statistics.median(lat) * 1e3:.1f} ms, max {max(lat) * 1e3:.1f} ms; told {results['told']}"
          if lat else "  honest farmer: no answer")
    print(f"  bomb requests: {sum(bombs.values())} ({bombs})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
