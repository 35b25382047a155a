"""The node's lifecycle as the operator moves it: copy the whole state to another database
(``copy.py``), back it up with its chunk store into one file and restore it (``backup.py``,
``restore.py``). The tables and their values come from ``db/transfer.py``; this package adds the
backup file, the chunk store and the progress shown to the operator. Everything here blocks: the
admin command runs it on a worker thread."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

#: advance a stage by n units
Advance = Callable[[int], None]


class Progress(Protocol):
    """Where the lifecycle commands report their progress (the admin command: a bar per stage on a
    terminal)."""

    def stage(self, label: str, total: int, unit: str = "rows") -> Advance:
        """A new stage of ``total`` units; returns the function that advances it."""
        ...


class Quiet:
    """No progress shown (tests, scripts)."""

    def stage(self, label: str, total: int, unit: str = "rows") -> Advance:
        return lambda n: None


QUIET = Quiet()
