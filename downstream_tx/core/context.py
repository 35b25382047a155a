"""The core context: what every service is built on, made once by ``runtime``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from downstream_tx.config import Config
from downstream_tx.core.keys import NodeKeys
from downstream_tx.db.stores import Stores
from downstream_tx.geoip import Locator

#: runs a blocking or CPU-heavy function off the reactor thread: ``await blocking(func, *args)``
Blocking = Callable[..., Awaitable[Any]]


async def drain(fetch_page: Callable[[], Awaitable[Any]], total: Any) -> Any:
    """Run a paged store call until its last page (``page.more`` false), adding each page into
    ``total`` (``total.add(page)``); returns ``total``. Each page is a transaction of its own."""
    while True:
        page = await fetch_page()
        total.add(page)
        if not page.more:
            return total


class Observed:
    """Events of the node that observers (metrics) are told about, as they happen."""

    def __init__(self, observers: Iterable[Callable[..., None]] = ()) -> None:
        self.observers: list[Callable[..., None]] = list(observers)

    def _tell(self, *event: Any) -> None:
        for observer in self.observers:
            observer(*event)


class Results(Observed):
    """Challenge outcomes as they are counted; observers get ``(result, n, protocol)`` with result
    ``pass``, ``fail`` or ``miss``."""

    def count(self, result: str, n: int, protocol: int = 0) -> None:
        self._tell(result, n, protocol)


class Downloads(Observed):
    """Download requests as they are decided; observers get the outcome (db/downloads.py: ``first``,
    ``resume``, ``again`` served; ``window_closed``, ``ended``, ``invalid``, ``missing`` refused)."""

    def count(self, outcome: str) -> None:
        self._tell(outcome)


@dataclass
class Core:
    config: Config
    stores: Stores
    #: the injected clock (the reactor in the daemon, ``task.Clock`` in tests)
    clock: Any
    blocking: Blocking
    keys: NodeKeys
    results: Results = field(default_factory=Results)
    downloads: Downloads = field(default_factory=Downloads)
    #: GeoIP (the ``geoip`` setting; None when it is off): looked up when a token is created or
    #: moves to a new IP, the only moments the IP is known before it is hashed
    locator: Locator | None = None
    #: this process among the instances sharing the database: its name in the jobs lease (``instance_name``
    #: or host:pid, then ``~`` and a random part made at each start), on /health and the dashboard
    instance: str = ""

    def now(self) -> float:
        return self.clock.seconds()
