"""What the services share beside their stores: how blocking work runs, paged store calls, and the
events of the node that observers (metrics, the dashboard's history) are told about."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

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
