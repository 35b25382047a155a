"""Shared machinery of the HTTP load benchmarks (``bench/farmers.py``, ``bench/ceiling.py``).

* :class:`Spawned` starts a server process (the real daemon, or the bare ceiling resource) on a
  free loopback port and reads its peak RSS (``VmHWM``) and CPU time from ``/proc``.
* :func:`run_load` runs farmer coroutines in several worker processes, each with its own reactor
  and a persistent treq connection pool; it keeps the farmers running through a warm-up, records
  only the measured window (a shared phase flag), and merges every worker's counters and latencies.

Everything here is loopback only and every loop is bounded by a deadline.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from twisted.internet.protocol import Protocol

ROOT = Path(__file__).resolve().parent.parent
TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
LISTENING = re.compile(r"listening on [0-9a-fA-F.:]*?:(\d+) ")
SETUP, MEASURE, STOP = 0, 1, 2


# --- server processes -----------------------------------------------------------------------------

def proc_status(pid: int, key: str) -> int | None:
    """A ``kB`` field of ``/proc/<pid>/status`` (VmHWM = peak RSS, VmRSS = current), in bytes."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a process (``/proc/<pid>/stat``)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process and every process under it (``--workers`` children)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    tree, todo = {pid}, [pid]
    while todo:
        parent = todo.pop()
        for child, ppid in parents.items():
            if ppid == parent and child not in tree:
                tree.add(child)
                todo.append(child)
    return sum(proc_cpu(p) for p in tree)


class Spawned:
    """A server subprocess whose log tells its port (``listening on …:PORT``)."""

    def __init__(self, argv: list[str], workdir: Path, env: dict[str, str] | None = None,
                 pattern: re.Pattern = LISTENING, timeout: float = 60.0):
        self.argv = argv
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / "server.log"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("DOWNSTREAM_")}
        self.env["PYTHONPATH"] = str(ROOT) + os.pathsep + self.env.get("PYTHONPATH", "")
        self.env.update(env or {})
        self.pattern = pattern
        self.timeout = timeout
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None

    @classmethod
    def daemon(cls, workdir: Path, args: list[str], **kw: Any) -> Spawned:
        argv = TWISTD + ["-n", "--pidfile=", "downstream", "--listen", "tcp:0:interface=127.0.0.1", *args]
        return cls(argv, workdir, **kw)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self) -> Spawned:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(self.argv, cwd=self.workdir, env=self.env, stdout=self._log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            match = self.pattern.search(self.log())
            if match:
                self.port = int(match.group(1))
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"server did not listen within {self.timeout}s:\n{self.log()[-3000:]}")

    def peak_rss(self) -> int | None:
        return proc_status(self.pid, "VmHWM")

    def cpu(self) -> float:
        """CPU seconds of the server and its child processes (``--workers``)."""
        return tree_cpu(self.pid)

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc is None:
            return
        keep = os.environ.get("DTX_BENCH_KEEP_LOG")
        if keep:
            import shutil

            shutil.copy(self.log_path, keep)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def __enter__(self) -> Spawned:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


# --- the load ---------------------------------------------------------------------------------------

@dataclass
class Stats:
    """What one worker (or, merged, the whole run) saw in the measured window."""

    requests: int = 0
    errors: int = 0
    #: named counters: "proofs" (v1 verified ok), "passes" (v0), "invalid", …
    counts: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    error_kinds: dict[str, int] = field(default_factory=dict)
    cpu: float = 0.0
    ready: int = 0

    def add(self, name: str, n: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + n

    def error(self, kind: str) -> None:
        self.errors += 1
        self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1

    def merge(self, other: Stats) -> None:
        self.requests += other.requests
        self.errors += other.errors
        self.latencies.extend(other.latencies)
        self.cpu += other.cpu
        self.ready += other.ready
        for k, v in other.counts.items():
            self.add(k, v)
        for k, v in other.error_kinds.items():
            self.error_kinds[k] = self.error_kinds.get(k, 0) + v


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    i = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[i]


class HttpConnection(Protocol):
    """A minimal HTTP/1.1 keep-alive client connection: one request at a time, responses with
    Content-Length (all the node and the bare resource send). About a tenth of treq's CPU per
    request, so that the load generator is not what limits the figures on a 2-core machine."""

    def __init__(self) -> None:
        self.buf = b""
        self.need: int | None = None
        self.code = 0
        self.close_after = False
        self.waiting: Any = None
        self.lost = False

    def connectionLost(self, reason: Any = None) -> None:
        self.lost = True
        d, self.waiting = self.waiting, None
        if d is not None:
            d.errback(ConnectionError("connection lost"))

    def send(self, data: bytes) -> Any:
        from twisted.internet import defer

        self.waiting = defer.Deferred()
        self.transport.write(data)
        return self.waiting

    def dataReceived(self, data: bytes) -> None:
        self.buf += data
        while self.waiting is not None:
            if self.need is None:
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                head, self.buf = self.buf[:end], self.buf[end + 4:]
                lines = head.split(b"\r\n")
                self.code = int(lines[0].split(b" ", 2)[1])
                length = None
                self.close_after = False
                for line in lines[1:]:
                    name, _, value = line.partition(b":")
                    name = name.strip().lower()
                    if name == b"content-length":
                        length = int(value)
                    elif name == b"connection" and value.strip().lower() == b"close":
                        self.close_after = True
                if length is None:
                    self.transport.loseConnection()
                    return
                self.need = length
            if len(self.buf) < self.need:
                return
            body, self.buf = self.buf[:self.need], self.buf[self.need:]
            self.need = None
            d, self.waiting = self.waiting, None
            d.callback((self.code, body))


class Client:
    """One worker's HTTP client, timing each request and counting it only while the shared phase
    is MEASURE. ``kind`` "raw" (default): :class:`HttpConnection` keep-alive connections;
    "treq": treq over a persistent pool (measured: ~1 ms of client CPU per request here)."""

    def __init__(self, reactor: Any, phase: Any, stats: Stats, connections: int, timeout: float = 30.0,
                 kind: str = "raw"):
        self.reactor = reactor
        self.phase = phase
        self.stats = stats
        self.timeout = timeout
        self.kind = kind
        self.last_error: Exception | None = None
        self.idle: dict[tuple[str, int], list[HttpConnection]] = {}
        self.pool = None
        if kind == "treq":
            import treq
            from twisted.web.client import Agent, HTTPConnectionPool

            self.pool = HTTPConnectionPool(reactor, persistent=True)
            self.pool.maxPersistentPerHost = connections
            self.pool.retryAutomatically = False
            self.http = treq.client.HTTPClient(Agent(reactor, pool=self.pool))

    @property
    def measuring(self) -> bool:
        return self.phase.value == MEASURE

    @property
    def stopping(self) -> bool:
        return self.phase.value == STOP

    async def _raw(self, method: str, url: str, body: bytes | None) -> tuple[int, bytes]:
        from twisted.internet import endpoints

        parts = urlsplit(url)
        key = (parts.hostname or "127.0.0.1", parts.port or 80)
        idle = self.idle.setdefault(key, [])
        conn = idle.pop() if idle else None
        if conn is None or conn.lost:
            endpoint = endpoints.TCP4ClientEndpoint(self.reactor, key[0], key[1], timeout=self.timeout)
            conn = await endpoints.connectProtocol(endpoint, HttpConnection())
        target = parts.path + ("?" + parts.query if parts.query else "")
        head = f"{method} {target} HTTP/1.1\r\nHost: {key[0]}:{key[1]}\r\n"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        data = (head + "\r\n").encode() + (body or b"")
        code, content = await conn.send(data).addTimeout(self.timeout, self.reactor)
        if conn.close_after:
            conn.transport.loseConnection()
        elif not conn.lost:
            idle.append(conn)
        return code, content

    async def _treq(self, method: str, url: str, body: bytes | None) -> tuple[int, bytes]:
        headers = {b"Content-Type": [b"application/json"]} if body is not None else None
        response = await self.http.request(method, url, data=body, headers=headers, timeout=self.timeout)
        return response.code, await response.content()

    async def request(self, method: str, url: str, body: bytes | None = None) -> tuple[int, bytes]:
        """(status, body); transport errors are counted and give status 0."""
        started = time.perf_counter()
        try:
            if self.kind == "raw":
                code, content = await self._raw(method, url, body)
            else:
                code, content = await self._treq(method, url, body)
        except Exception as e:  # a benchmark counts failures, it does not stop on them
            self.last_error = e
            if self.measuring:
                self.stats.error(type(e).__name__)
            return 0, b""
        if self.measuring:
            self.stats.requests += 1
            self.stats.latencies.append(time.perf_counter() - started)
            if code >= 500:
                self.stats.error(f"http_{code}")
        return code, content

    async def close(self) -> None:
        for conns in self.idle.values():
            for conn in conns:
                if not conn.lost:
                    conn.transport.loseConnection()
        if self.pool is not None:
            await self.pool.closeCachedConnections()


#: a farmer: ``async (client, base_url, index, params) -> None``; it runs until ``client.stopping``
Farmer = Callable[[Client, str, int, dict], Any]


def _worker(farmer_path: str, url: str, first: int, count: int, params: dict, phase: Any, ready: Any,
            results: Any) -> None:
    import importlib

    from twisted.internet import defer, task

    module_name, _, func_name = farmer_path.partition(":")
    sys.path.insert(0, str(ROOT / "bench"))
    sys.path.insert(0, str(ROOT))
    farmer = getattr(importlib.import_module(module_name), func_name)
    stats = Stats()

    async def main(reactor: Any) -> None:
        client = Client(reactor, phase, stats, connections=count + 4, kind=params.get("client", "raw"))
        runs = [defer.ensureDeferred(farmer(client, url, first + i, params, ready)) for i in range(count)]
        results_ = await defer.DeferredList(runs, consumeErrors=True)
        for ok, value in results_:
            if not ok:
                stats.error("farmer_crashed:" + value.type.__name__)
                print(value.getTraceback(), file=sys.stderr)
        await client.close()

    try:
        task.react(lambda reactor: defer.ensureDeferred(main(reactor)))
    except SystemExit:
        pass
    finally:
        stats.cpu = sum(os.times()[:2])
        results.put(stats)


def run_load(farmer_path: str, url: str, farmers: int, processes: int, params: dict, duration: float,
             setup_timeout: float, warmup: float = 1.0) -> tuple[Stats, float, dict]:
    """Run ``farmers`` farmers in ``processes`` worker processes against ``url``.

    Farmers start in SETUP; once every farmer has signalled ready (``ready`` counter) — or after
    ``setup_timeout`` — and ``warmup`` more seconds have passed, the phase becomes MEASURE for
    ``duration`` seconds, then STOP. Returns the merged stats, the measured seconds and
    {"ready": n, "setup_s": seconds}.
    """
    params = dict(params)
    on_measure = params.pop("_on_measure", None)
    ctx = mp.get_context("spawn")
    phase = ctx.Value("i", SETUP, lock=False)
    ready = ctx.Value("i", 0)
    results = ctx.Queue()
    per = [farmers // processes + (1 if i < farmers % processes else 0) for i in range(processes)]
    workers = []
    first = 0
    for n in per:
        if n:
            p = ctx.Process(target=_worker, args=(farmer_path, url, first, n, params, phase, ready, results))
            p.start()
            workers.append(p)
        first += n
    started = time.monotonic()
    deadline = started + setup_timeout
    while time.monotonic() < deadline and ready.value < farmers and all(p.is_alive() for p in workers):
        time.sleep(0.05)
    setup_s = time.monotonic() - started
    time.sleep(warmup)
    if on_measure is not None:
        on_measure("start")
    phase.value = MEASURE
    print(f"   ... {ready.value}/{farmers} farmers ready after {setup_s:.1f} s; measuring for {duration:g} s",
          file=sys.stderr, flush=True)
    t0 = time.monotonic()
    time.sleep(duration)
    phase.value = STOP
    measured = time.monotonic() - t0
    if on_measure is not None:
        on_measure("stop")
    total = Stats()
    for _ in workers:
        try:
            total.merge(results.get(timeout=60))
        except Exception:
            total.error("worker_lost")
    for p in workers:
        p.join(10)
        if p.is_alive():
            p.terminate()
    return total, measured, {"ready": ready.value, "setup_s": setup_s}


def report(title: str, stats: Stats, seconds: float, extra: dict[str, str] | None = None) -> dict[str, float]:
    """Print the figures of a run; returns them."""
    lat = sorted(stats.latencies)
    figures = {
        "requests_s": stats.requests / seconds,
        "p50_ms": percentile(lat, 0.50) * 1000,
        "p95_ms": percentile(lat, 0.95) * 1000,
        "p99_ms": percentile(lat, 0.99) * 1000,
        "errors": stats.errors,
    }
    for name, n in sorted(stats.counts.items()):
        figures[f"{name}_s"] = n / seconds
    print(f"== {title}")
    print(f"   requests/s {figures['requests_s']:10.0f}   ({stats.requests} in {seconds:.1f} s)")
    for name, n in sorted(stats.counts.items()):
        print(f"   {name + '/s':<10} {n / seconds:10.0f}   ({n})")
    print(f"   latency ms p50 {figures['p50_ms']:.2f}  p95 {figures['p95_ms']:.2f}  p99 {figures['p99_ms']:.2f}")
    kinds = ", ".join(f"{k}={v}" for k, v in sorted(stats.error_kinds.items())) or "none"
    print(f"   errors {stats.errors} ({kinds})")
    print(f"   load generator CPU {stats.cpu:.1f} s (all workers, whole run)")
    for k, v in (extra or {}).items():
        print(f"   {k} {v}")
    sys.stdout.flush()
    return figures


def machine() -> str:
    import platform

    return (f"{os.cpu_count()} cores ({platform.processor() or platform.machine()}), "
            f"Python {platform.python_version()}, Linux {platform.release()}")
