"""What a farmer shows: per node and protocol, the state, contracts, bytes stored, proofs passed and
failed, contracts whose data is lost, and the next deadline. On a terminal a screen redrawn every
second (plain ANSI: cursor home, clear); elsewhere one log line per node and protocol every
``summary_interval`` seconds."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from downstream_tx.version import full_version

log = Logger()

HOME_CLEAR = "\x1b[H\x1b[J"


@dataclass(frozen=True)
class Row:
    url: str
    protocol: str
    state: str
    contracts: int
    stored: int
    passed: int
    failed: int
    lost: int
    next_deadline: float | None  # seconds from now
    note: str


def rows(nodes: list[Any], now: float) -> list[Row]:
    out = []
    for node in nodes:
        state = node.state if node.down is None or node.state == "failed" else "node down"
        note = node.error or (f"retrying: {node.down}" if node.down else "") or \
            ("disk full" if node.disk_full else "")
        protocols = node.protocols or ["-"]
        for protocol in protocols:
            held = [c for c in node.book.contracts.values() if c.protocol == protocol]
            due = [c.due_at for c in held if not c.answered and c.problem is None and c.due_at > now]
            passed, failed = node.results.get(protocol, (0, 0))
            out.append(Row(node.url, protocol, state, len(held), sum(c.size for c in held if c.stored), passed,
                           failed, sum(1 for c in held if c.problem is not None),
                           min(due) - now if due else None, note))
    return out


def size_text(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def seconds_text(s: float | None) -> str:
    if s is None:
        return "-"
    s = int(s)
    return f"{s} s" if s < 120 else f"{s // 60} min" if s < 7200 else f"{s // 3600} h"


def uptime_text(s: float) -> str:
    s = int(s)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def render(table: list[Row], uptime: float, passed: int, last: str, width: int = 100) -> str:
    head = f"downstream-farmer {full_version()} · up {uptime_text(uptime)} · {passed} proofs passed · Ctrl-C stops"
    lines = [head[:width], ""]
    cols = f"{'node':<28} {'proto':5} {'state':10} {'contracts':>9} {'stored':>10} {'passed':>7} {'failed':>6} " \
           f"{'lost':>5} {'next due':>9}"
    lines.append(cols[:width])
    for r in table:
        line = f"{r.url[:28]:<28} {r.protocol:5} {r.state[:10]:10} {r.contracts:>9} {size_text(r.stored):>10} " \
               f"{r.passed:>7} {r.failed:>6} {r.lost:>5} {seconds_text(r.next_deadline):>9}"
        lines.append(line[:width])
        if r.note:
            lines.append(("    " + r.note)[:width])
    lines += ["", ("last: " + last)[:width] if last else ""]
    return HOME_CLEAR + "\n".join(lines) + "\n"


def summary(r: Row) -> str:
    text = (f"{r.url} {r.protocol}: {r.state}, {r.contracts} contracts, {size_text(r.stored)} stored, "
            f"{r.passed} passed, {r.failed} failed, {r.lost} lost, next deadline in {seconds_text(r.next_deadline)}")
    return text + (f" ({r.note})" if r.note else "")


class StatusView:
    """Redraws the terminal every ``every`` seconds (``stream`` is a TTY), or logs the summary lines
    every ``summary_every`` seconds (0: never)."""

    def __init__(self, clock: IReactorTime, nodes: Callable[[], list[Any]], passed: Callable[[], int],
                 stream: IO[str] | None, summary_every: float, every: float = 1.0):
        self.clock = clock
        self.nodes = nodes
        self.passed = passed
        self.stream = stream
        self.summary_every = summary_every
        self.every = every
        self.started = clock.seconds()
        self.last = ""
        self._call: Any = None

    def note(self, text: str) -> None:
        """The latest warning or error, shown at the bottom of the screen."""
        self.last = text

    def start(self) -> None:
        self._schedule(self.every if self.stream is not None else self.summary_every)

    def _schedule(self, delay: float) -> None:
        if delay > 0:
            self._call = self.clock.callLater(delay, self._tick)

    def _tick(self) -> None:
        now = self.clock.seconds()
        table = rows(self.nodes(), now)
        if self.stream is not None:
            self.stream.write(render(table, now - self.started, self.passed(), self.last))
            self.stream.flush()
            self._schedule(self.every)
        else:
            for r in table:
                log.info("{summary}", summary=summary(r))
            self._schedule(self.summary_every)

    def stop(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        if self.stream is not None:
            self._tick_final()

    def _tick_final(self) -> None:
        now = self.clock.seconds()
        assert self.stream is not None
        self.stream.write(render(rows(self.nodes(), now), now - self.started, self.passed(), self.last))
        self.stream.flush()
