"""Several node instances (real daemons) on one MySQL/MariaDB database, and farmers that spread
their requests over all of them (the scale-out tests)."""

from __future__ import annotations

import itertools
import json
import threading
import urllib.error
import urllib.request
from pathlib import Path

from support import wait_until
from support.daemon import Daemon
from support.fault_load import V0Farmer, V1Farmer


class UrlPool:
    """The base URLs of the live instances; each call of :meth:`next` gives the next one."""

    def __init__(self, urls: list[str]):
        self.lock = threading.Lock()
        self.set(urls)

    def set(self, urls: list[str]) -> None:
        with self.lock:
            self.urls = list(urls)
            self._cycle = itertools.cycle(self.urls)

    def next(self) -> str:
        with self.lock:
            return next(self._cycle)


class SpreadV0Farmer(V0Farmer):
    """A v0 farmer whose every step goes to the next live instance."""

    def __init__(self, name: str, pool: UrlPool, address: str, files: int):
        super().__init__(name, pool.next(), address, files)
        self.pool = pool

    def step(self) -> None:
        self.base = self.pool.next()
        super().step()


class SpreadV1Farmer(V1Farmer):
    def __init__(self, name: str, pool: UrlPool, address: str, chunk_dir: str, desired_total: int):
        super().__init__(name, pool.next(), address, chunk_dir, desired_total)
        self.pool = pool

    def step(self) -> None:
        self.base = self.pool.next()
        super().step()


def health(url: str) -> dict | None:
    """``GET /health`` of an instance (None when it does not answer)."""
    try:
        with urllib.request.urlopen(url + "/health", timeout=5) as r:
            return json.loads(r.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None


class Instances:
    """``n`` daemons with the same arguments on one database, each in a directory of its own."""

    def __init__(self, tmp_path: Path, args: list[str], n: int = 3):
        self.tmp_path = Path(tmp_path)
        self.args = args
        self.daemons: list[Daemon] = []
        self.started = 0
        for _ in range(n):
            self.start()

    def start(self) -> Daemon:
        self.started += 1
        d = Daemon(self.tmp_path / f"instance{self.started}", self.args).start()
        self.daemons.append(d)
        return d

    def live(self) -> list[Daemon]:
        return [d for d in self.daemons if d.proc is not None and d.proc.poll() is None]

    def urls(self) -> list[str]:
        return [d.url for d in self.live()]

    def leader(self, among: list[Daemon] | None = None, newer_than: int = 0,
               timeout: float = 20.0) -> tuple[Daemon, dict]:
        """The one instance (of ``among``, default the live ones) that reports itself leader of a
        lease generation above ``newer_than``, polled until there is one."""
        found: list = []

        def one() -> bool:
            leaders = []
            for d in among or self.live():
                h = health(d.url)
                if h and h.get("role") == "leader" and h["lease"]["generation"] > newer_than:
                    leaders.append((d, h))
            found[:] = leaders
            return len(leaders) == 1

        wait_until(one, timeout, "exactly one leader")
        return found[0]

    def stop_all(self) -> list[int]:
        return [d.stop(30) for d in self.live()]

    def kill_all(self) -> None:
        for d in self.daemons:
            d.kill()
