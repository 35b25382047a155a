"""Farmers against the real daemon, over loopback: v1 batched refresh+answer cycles, v0 single answers.

v1: each farmer gets a token and CONTRACTS seeded chunks, then cycles: wait for the due time,
POST /challenge (all its ids), prove every challenge locally (the heartbeat module's ``prove`` over
RandomIO bytes generated in memory), POST /answer with all proofs. Every "ok" in a report is one
real Merkle verify on the node (and a stored state change): "proofs/s" counts only those.

v0: each farmer gets a token and CONTRACTS stored-file contracts (downloading each file once), then
loops: GET /due, and for each outstanding challenge one GET /challenge/<token>/<hash>/<answer>;
when nothing is due it sleeps until its next window. "passes/s" counts answers the node checked
as passes, "late_passes/s" those it passed as late (arrived after the deadline, within late_grace),
"fails/s" wrong answers (or answers to a challenge the node no longer held), "not_due/s" 409s.

Usage (one command each):
  python bench/farmers.py v1 --spawn --db sqlite [--farmers 50 --contracts 500]
  python bench/farmers.py v1 --spawn --db mysql            # $DOWNSTREAM_TEST_MYSQL_URL's server,
                                                           # database dtx_test_bench6 (re-created)
  python bench/farmers.py v0 --spawn --db sqlite [--farmers 200 --contracts 30]
  python bench/farmers.py v0 --url http://127.0.0.1:5000   # a running daemon (set it up yourself)
  add --quick for a tiny run (the test suite does), --processes N for the load generator's workers.
  Scale-out: --workers N (one daemon, N processes on its socket; MySQL/MariaDB), --instances N (N
  daemons on one database, farmers spread round robin; SQLite too, for the measurement). Daemon CPU
  is summed over every node process.

The load generator and the daemon share this machine's cores: see the CPU figures printed.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson  # noqa: E402
from loadgen import Spawned, machine, proc_cpu, run_load  # noqa: E402

ADDRESS = "19qVgG8C6eXwKMMyvVegsi3xCsKyk3Z3jV"


def farmer_address(n: int) -> str:
    """A valid payout address of its own for farmer ``n``."""
    import coincurve

    from downstream_tx.bitcoin import address_from_pubkey

    return address_from_pubkey(coincurve.PrivateKey((n + 1).to_bytes(32, "big")).public_key.format(compressed=True))
#: the MariaDB database --db mysql drops and re-creates ($DOWNSTREAM_BENCH_DB overrides it)
BENCH_DB = os.environ.get("DOWNSTREAM_BENCH_DB", "dtx_test_bench6")
V1 = "/api/downstream/v1"
#: v1 contracts per second of challenge interval by default: more outstanding proofs per second than
#: the load generator can make on this machine would let contracts expire unanswered during set-up,
#: so the run would measure nothing (the interval grows with farmers x contracts instead)
V1_PROOFS_PER_INTERVAL = 5000
V0 = "/api/downstream"


async def sleep(seconds: float) -> None:
    from twisted.internet import reactor, task

    await task.deferLater(reactor, max(0.0, seconds), lambda: None)


async def mark_ready(ready: Any) -> None:
    with ready.get_lock():
        ready.value += 1


# --- v1 -----------------------------------------------------------------------------------------

class V1Contract:
    __slots__ = ("id", "reader", "tag", "challenge", "due_at")

    def __init__(self, cid: int, reader: Any, tag: Any, challenge: Any, due_at: float):
        self.id, self.reader, self.tag, self.challenge, self.due_at = cid, reader, tag, challenge, due_at


def pick(url: str, index: int) -> str:
    """Farmer ``index``'s node when ``url`` lists several (``--instances``): round robin."""
    urls = url.split(",")
    return urls[index % len(urls)]


async def v1_farmer(client, url: str, index: int, params: dict, ready: Any) -> None:
    from downstream_tx.heartbeat import Challenge, Merkle, RandomIO, Tag

    url = pick(url, index)

    code, body = await client.request("GET", f"{url}{V1}/new/{ADDRESS}")
    if code != 200:
        raise RuntimeError(f"/new: {code} {body[:200]!r} {client.last_error!r}")
    reply = orjson.loads(body)
    token = reply["token"]
    heartbeat = Merkle(reply["heartbeat"]["check_fraction"], b"")
    want = params["contracts"]
    contracts: dict[int, V1Contract] = {}
    signalled = False

    async def prove_and_answer(batch: list[V1Contract]) -> None:
        proofs = []
        for n, c in enumerate(batch):
            proofs.append({"file_hash": c.id, "proof": heartbeat.prove(c.reader, c.challenge, c.tag).to_dict()})
            if n % 200 == 199:
                await sleep(0)  # let this worker's other farmers' responses in
        code, body = await client.request("POST", f"{url}{V1}/answer/{token}", orjson.dumps({"proofs": proofs}))
        if code != 200:
            return
        for entry in orjson.loads(body)["report"]:
            if entry.get("status") == "ok":
                if client.measuring:
                    client.stats.add("proofs")
            else:
                if client.measuring:
                    client.stats.add("answer_" + entry.get("error", "?").split(":")[0].replace(" ", "_"))
                contracts.pop(entry.get("file_hash"), None)

    attempts = 0

    async def acquire_once() -> None:
        """One /chunk request for at most ``chunk_batch`` chunks, answered at once (a long /chunk
        transaction would hold every other farmer's refresh past its deadline, so farmers take
        turns). Contracts from one /chunk share their due times: the batch is also the size of
        every later /challenge and /answer."""
        nonlocal attempts
        attempts += 1
        size = min(want - len(contracts), params["chunk_batch"]) * params["max_chunk_size"]
        code, body = await client.request("GET", f"{url}{V1}/chunk/{token}/{size}")
        chunks = orjson.loads(body).get("chunks", []) if code == 200 else []
        if not chunks:
            await sleep(0.2)
            return
        now = time.time()
        batch = []
        for ch in chunks:
            c = V1Contract(ch["file_hash"], RandomIO(ch["seed"], ch["size"]), Tag.from_dict(ch["tag"]),
                           Challenge.from_dict(ch["challenge"]), now + ch["due"])
            contracts[c.id] = c
            batch.append(c)
        await prove_and_answer(batch)

    while not client.stopping:
        first = min((c.due_at for c in contracts.values()), default=None)
        acquiring = len(contracts) < want and attempts < params["chunk_attempts"]
        if acquiring and (first is None or first - time.time() > 0.3):
            await acquire_once()
            continue
        if not signalled:
            signalled = True
            await mark_ready(ready)
        if first is None:
            await sleep(0.2)
            continue
        # the batch whose due time comes first (contracts from one /chunk share it)
        batch = [c for c in contracts.values() if c.due_at <= first + 0.5]
        await sleep(first - time.time() + 0.01)
        if client.stopping:
            break
        code, body = await client.request("POST", f"{url}{V1}/challenge/{token}",
                                          orjson.dumps({"hashes": [c.id for c in batch]}))
        if code != 200:
            await sleep(0.1)
            continue
        now = time.time()
        fresh = []
        for entry in orjson.loads(body)["challenges"]:
            c = contracts.get(entry.get("file_hash"))
            if c is None:
                continue
            if "challenge" not in entry:  # expired, no more challenges, not found: drop it
                if client.measuring:
                    client.stats.add("challenge_" + (entry.get("error") or entry.get("status", "?")).replace(" ", "_"))
                del contracts[c.id]
            elif entry["answered"]:  # asked a little early: the same due time, ask again
                c.due_at = now + max(entry["due"], 0.005)
            else:
                c.challenge = Challenge.from_dict(entry["challenge"])
                c.due_at = now + entry["due"]
                fresh.append(c)
        if fresh:
            await prove_and_answer(fresh)


def _prepare(overrides: dict[str, Any], work: Callable[[Any, Any], Any]) -> float:
    """Open the node on the bench database (creating it), run ``await work(node, reactor)``, close it.
    Returns the seconds it took."""
    from twisted.internet import defer, task

    from downstream_tx.config import load_config
    from downstream_tx.runtime import open_services

    started = time.time()
    config = load_config(environ={}, overrides=overrides)

    async def main(reactor):
        node = await open_services(config, reactor)
        try:
            await work(node, reactor)
        finally:
            node.db.close()

    try:
        task.react(lambda reactor: defer.ensureDeferred(main(reactor)))
    except SystemExit as e:
        if e.code:
            raise
    return time.time() - started


def prepare_v1(db: str, data_dir: str, chunks: int, size: int, challenges: int, processes: int) -> float:
    """Create the database and fill the seeded pool with ``chunks`` pre-encoded chunks (so the
    daemon does not encode during the run). Returns the seconds it took."""
    import multiprocessing as mp

    from twisted.internet import defer

    async def fill(node, reactor):
        key = node.keys.heartbeat_key()
        per = [chunks // processes + (1 if i < chunks % processes else 0) for i in range(processes)]
        with mp.get_context("spawn").Pool(processes) as pool:
            parts = [pool.apply_async(_encode, (key, size, n, challenges)) for n in per if n]
            for part in parts:
                encoded = await defer.ensureDeferred(_wait(reactor, part))
                for start in range(0, len(encoded), 1000):
                    await node.stores.seeded.pool_add(encoded[start:start + 1000], 1, time.time())

    return _prepare({"db": db, "data_dir": data_dir}, fill)


async def _wait(reactor, result):
    from twisted.internet import task

    for _ in range(36000):
        if result.ready():
            return result.get()
        await task.deferLater(reactor, 0.05, lambda: None)
    raise TimeoutError("encoding did not finish")


def _encode(key: bytes, size: int, count: int, challenges: int) -> list:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from downstream_tx.db.seeded import EncodedChunk
    from downstream_tx.heartbeat import RandomIO, encode_seeded

    out = []
    for _ in range(count):
        seed = os.urandom(16).hex()
        tag, state = encode_seeded(key, seed, size, n=challenges, check_fraction=0.01, timestamp=time.time())
        digest = hashlib.sha256(RandomIO(seed, size).read_at(0, size)).hexdigest()
        out.append(EncodedChunk(seed, size, digest, orjson.dumps(state.to_dict()).decode(),
                                orjson.dumps(tag.to_dict()).decode()))
    return out


# --- v0 -----------------------------------------------------------------------------------------

_downloads: dict[str, bytes] = {}


async def v0_farmer(client, url: str, index: int, params: dict, ready: Any) -> None:
    url = pick(url, index)
    # a payout address of its own: a file's replicas go to distinct farmers (addresses)
    code, body = await client.request("GET", f"{url}{V0}/new/{farmer_address(index)}")
    if code != 200:
        raise RuntimeError(f"/new: {code} {body[:200]!r} {client.last_error!r}")
    token = orjson.loads(body)["token"]
    for _ in range(params["contracts"]):
        code, body = await client.request("GET", f"{url}{V0}/chunk/{token}")
        if code != 200:
            break
        chunk = orjson.loads(body)
        if chunk["file_hash"] not in _downloads:
            code, data = await client.request("GET", chunk["url"])
            if code == 200:
                _downloads[chunk["file_hash"]] = data
    await mark_ready(ready)
    rng = random.Random(index)
    while not client.stopping:
        code, body = await client.request("GET", f"{url}{V0}/due/{token}")
        if code != 200:
            await sleep(0.1)
            continue
        due = orjson.loads(body)["due_contracts"]
        if not due:  # nothing outstanding: the next window opens at the earliest deadline
            await sleep(params["idle"] * (0.5 + rng.random()))
            continue
        for item in due:
            if client.stopping:
                break
            data = _downloads.get(item["hash"])
            if data is None:
                continue
            answer = hmac.new(bytes.fromhex(item["challenge"]), data, hashlib.sha256).hexdigest()
            code, body = await client.request("GET", f"{url}{V0}/challenge/{token}/{item['hash']}/{answer}")
            if client.measuring:
                if code == 200:
                    reply = orjson.loads(body)
                    if reply["status"] != "pass":
                        client.stats.add("fails")
                    else:  # a late pass: after the deadline, within late_grace (answered "pass", "late": true)
                        client.stats.add("late_passes" if reply.get("late") else "passes")
                elif code == 409:
                    client.stats.add("not_due")


def prepare_v0(db: str, data_dir: str, files: int, redundancy: int, interval: int, batch: int) -> float:
    """Create the database and add ``files`` stored 1 KiB files (their first challenge batch too)."""

    async def add(node, reactor):
        with tempfile.TemporaryDirectory() as tmp:
            for i in range(files):
                path = os.path.join(tmp, f"f{i}")
                with open(path, "wb") as f:
                    f.write(os.urandom(1024))
                await node.files.add(path, redundancy, interval)

    return _prepare({"db": db, "data_dir": data_dir, "challenge_batch": batch}, add)


def mysql_url(name: str = BENCH_DB) -> str:
    """The benchmark's own database on the server of $DOWNSTREAM_TEST_MYSQL_URL, dropped and re-created."""
    import pymysql

    from downstream_tx.db.url import parse_db_url

    base = os.environ.get("DOWNSTREAM_TEST_MYSQL_URL")
    if not base:
        raise SystemExit("--db mysql needs DOWNSTREAM_TEST_MYSQL_URL (a server where the user may create "
                         f"{name})")
    u = parse_db_url(base)
    conn = pymysql.connect(host=u.host, port=u.port, user=u.user, password=u.password)
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
    conn.close()
    spider_dir = os.environ.get("DOWNSTREAM_TEST_SPIDER")
    if spider_dir:  # the node's schema sharded over that Spider cluster (docs/capacity.md)
        import subprocess

        script = Path(__file__).resolve().parent.parent / "contrib" / "spider" / "cluster.sh"
        subprocess.run([str(script), "shard", spider_dir, name], check=True, stdout=subprocess.DEVNULL)
    return f"mysql://{u.user}:{u.password}@{u.host}:{u.port}/{name}"


def engine_version(db: str) -> str:
    if db.startswith("sqlite"):
        import sqlite3

        return f"SQLite {sqlite3.sqlite_version}"
    import pymysql

    from downstream_tx.db.url import parse_db_url

    u = parse_db_url(db)
    conn = pymysql.connect(host=u.host, port=u.port, user=u.user, password=u.password)
    with conn.cursor() as cur:
        cur.execute("SELECT VERSION()")
        version = cur.fetchone()[0]
    conn.close()
    return f"MariaDB/MySQL {version}"


def daemon_args(mode: str, args: argparse.Namespace, db: str, data_dir: str) -> list[str]:
    # (the load generator is one client address holding a keep-alive connection per farmer)
    common = ["--db", db, "--data-dir", data_dir, "--max-tokens-per-ip", "0", "--token-rate", "0",
              "--max-tokens-per-address", "0", "--distinct-networks", "false",  # one client address: one network
              "--max-body-size", str(16 << 20), "--tick", str(args.tick),
              "--max-failures", "1000", "--db-pool-size", str(args.pool_size), "--max-connections-per-client", "0"]
    if args.workers > 1:
        common += ["--workers", str(args.workers)]
    if mode == "v1":
        return common + ["--seeded-interval", str(args.interval), "--seeded-pool", "4KiB:0",
                         "--max-chunks-per-request", "1000", "--max-size-per-address", str(1 << 40)]
    return common + ["--challenge-batch", str(args.challenge_batch),
                     "--challenge-low-water", str(args.challenge_batch // 4)]


def db_server_pid() -> int | None:
    """The local MariaDB/MySQL server's pid, to measure its CPU too: ``$DTX_BENCH_DB_PID`` (its
    first pid), else the one ``mariadbd``/``mysqld`` started without ``--defaults-file`` (None if
    not exactly one)."""
    if os.environ.get("DTX_BENCH_DB_PID"):
        return db_server_pids()[0]
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/comm") as f:
                if f.read().strip() not in ("mariadbd", "mysqld"):
                    continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if b"--defaults-file" not in f.read():
                    found.append(int(entry))
        except (OSError, ValueError):
            continue
    return found[0] if len(found) == 1 else None


def db_server_pids() -> list[int]:
    """Every database server process whose CPU counts: ``$DTX_BENCH_DB_PID`` may name several,
    comma-separated (a Spider head and its backends, docs/capacity.md); else :func:`db_server_pid`."""
    if os.environ.get("DTX_BENCH_DB_PID"):
        return [int(p) for p in os.environ["DTX_BENCH_DB_PID"].split(",")]
    pid = db_server_pid()
    return [] if pid is None else [pid]


def run(mode: str, args: argparse.Namespace, spawned: Spawned | None, url: str) -> dict[str, float]:
    params: dict[str, Any] = {"client": args.client, "contracts": args.contracts, "idle": args.idle,
                              "chunk_attempts": 200, "max_chunk_size": args.chunk_size,
                              "chunk_batch": args.chunk_batch}
    cpu: dict[str, float] = {}

    servers = db_server_pids() if args.db == "mysql" else []

    def on_measure(what: str) -> None:
        if spawned is not None:
            cpu[what] = spawned.cpu()
        if servers:
            cpu["db " + what] = sum(proc_cpu(pid) for pid in servers)

    params["_on_measure"] = on_measure
    farmer = "farmers:v1_farmer" if mode == "v1" else "farmers:v0_farmer"
    stats, seconds, info = run_load(farmer, url, args.farmers, args.processes, params, args.duration,
                                    setup_timeout=args.setup_timeout, warmup=args.warmup)
    extra = {"farmers ready": f"{info['ready']}/{args.farmers} after {info['setup_s']:.1f} s",
             "load generator": f"{args.processes} processes ({args.client} client), {args.farmers} farmers, "
                               f"{args.contracts} contracts each"
                               + (f", batches of {args.chunk_batch}" if mode == "v1" else "")}
    node_cpu = 0.0
    if spawned is not None:
        node_cpu = cpu.get("stop", 0.0) - cpu.get("start", 0.0)
        rss = spawned.peak_rss()
        extra["daemon CPU"] = f"{node_cpu:.1f} s in the {seconds:.1f} s window ({node_cpu / seconds:.0%} of one core)"
        extra["daemon peak RSS"] = f"{rss / 2**20:.0f} MiB" if rss else "?"
        key = "proofs" if mode == "v1" else "passes"
        done = stats.counts.get(key, 0)
        if node_cpu > 0 and done:
            extra[f"{key} per daemon CPU-second"] = f"{done / node_cpu:.0f}"
            unit = "verified proof" if mode == "v1" else "pass"
            extra[f"daemon CPU per {unit}"] = f"{node_cpu / done * 1e6:.1f} µs"
            if servers:
                db_cpu = cpu.get("db stop", 0.0) - cpu.get("db start", 0.0)
                extra["database server CPU"] = (f"{db_cpu:.1f} s in the window, {db_cpu / done * 1e6:.1f} µs per "
                                                f"{unit} (a shared server: other sessions' queries count too)")
    from loadgen import report

    title = f"{mode} farmers, {args.db if spawned else url}"
    if args.workers > 1 or args.instances > 1:
        title += f", {args.workers} workers" if args.workers > 1 else f", {args.instances} instances"
    return report(title, stats, seconds, extra) | {"rss": (spawned.peak_rss() or 0) if spawned else 0,
                                                   "node_cpu_s": node_cpu if spawned is not None else 0.0,
                                                   "requests": stats.requests, "seconds": seconds}


class Group:
    """Spawned daemons measured as one node: CPU summed, the largest peak RSS."""

    def __init__(self, daemons: list[Spawned]):
        self.daemons = daemons

    def __enter__(self) -> Group:
        for d in self.daemons:
            d.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        for d in self.daemons:
            d.stop()

    @property
    def url(self) -> str:
        return ",".join(d.url for d in self.daemons)

    def cpu(self) -> float:
        return sum(d.cpu() for d in self.daemons)

    def peak_rss(self) -> int | None:
        return max((d.peak_rss() or 0) for d in self.daemons) or None


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=["v0", "v1"])
    ap.add_argument("--url", help="a running daemon (else --spawn)")
    ap.add_argument("--spawn", action="store_true", help="start a daemon on a temporary data directory")
    ap.add_argument("--db", choices=["sqlite", "mysql"], default="sqlite")
    ap.add_argument("--farmers", type=int)
    ap.add_argument("--contracts", type=int, help="contracts per farmer")
    ap.add_argument("--processes", type=int, default=2, help="load generator worker processes")
    ap.add_argument("--duration", type=float, default=15.0, help="measured seconds")
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--interval", type=int,
                    help="challenge interval (v1 seeded_interval, v0 file); default v0 1 s, v1 one second per "
                         f"{V1_PROOFS_PER_INTERVAL} contracts (what the load generator can prove here)")
    ap.add_argument("--tick", type=float, default=0.2)
    ap.add_argument("--challenges", type=int, default=64, help="v1: challenges encoded per seeded chunk")
    ap.add_argument("--chunk-batch", type=int, default=50,
                    help="v1: chunks per /chunk request, and so contracts per /challenge and /answer")
    ap.add_argument("--chunk-size", type=int, default=16384, help="v1 seeded chunk bytes")
    ap.add_argument("--challenge-batch", type=int, default=10000, help="v0: hash challenges per batch")
    ap.add_argument("--pool-size", type=int, default=5, help="daemon's MySQL pool")
    ap.add_argument("--idle", type=float, default=0.2, help="v0: seconds a farmer waits when nothing is due")
    ap.add_argument("--setup-timeout", type=float, default=300.0)
    ap.add_argument("--client", choices=["raw", "treq"], default="raw",
                    help="load generator HTTP client: raw keep-alive connections (default) or treq")
    ap.add_argument("--quick", action="store_true", help="a tiny run (for the test suite)")
    ap.add_argument("--workers", type=int, default=1, help="the daemon's --workers (MySQL/MariaDB)")
    ap.add_argument("--instances", type=int, default=1, help="daemons on the one database")
    return ap


def defaults(args: argparse.Namespace) -> None:
    if args.quick:
        args.farmers = args.farmers or 2
        args.contracts = args.contracts or 3
        args.duration, args.warmup, args.processes = min(args.duration, 2.0), 0.5, 1
        args.challenges, args.challenge_batch = 8, 100
    elif args.mode == "v1":
        args.farmers = args.farmers or 50
        args.contracts = args.contracts or 500
    else:
        args.farmers = args.farmers or 200
        args.contracts = args.contracts or 30
    if args.interval is None:
        total = args.farmers * args.contracts
        args.interval = max(1, round(total / V1_PROOFS_PER_INTERVAL)) if args.mode == "v1" else 1


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    defaults(args)
    if not args.url and not args.spawn:
        raise SystemExit("give --url URL or --spawn")
    print(f"machine: {machine()}; the load generator and the daemon share these cores")
    if args.url:
        run(args.mode, args, None, args.url.rstrip("/"))
        return 0
    with tempfile.TemporaryDirectory(prefix="dtx-bench-") as tmp:
        db = mysql_url() if args.db == "mysql" else f"sqlite:///{tmp}/data/downstream.db"
        data_dir = os.path.join(tmp, "data")
        print(f"database: {engine_version(db)}")
        if args.mode == "v1":
            total = args.farmers * args.contracts
            took = prepare_v1(db, data_dir, total, args.chunk_size, args.challenges, max(1, args.processes))
            print(f"setup: {total} seeded chunks of {args.chunk_size} B, {args.challenges} challenges each, "
                  f"encoded and pooled in {took:.1f} s; challenge interval {args.interval} s")
        else:
            took = prepare_v0(db, data_dir, args.contracts, args.farmers, args.interval, args.challenge_batch)
            print(f"setup: {args.contracts} stored files (redundancy {args.farmers}, interval {args.interval} s, "
                  f"{args.challenge_batch} challenges) in {took:.1f} s")
        group = Group([Spawned.daemon(Path(tmp) / f"daemon{i}", daemon_args(args.mode, args, db, data_dir))
                       for i in range(args.instances)])
        with group:
            run(args.mode, args, group, group.url)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
