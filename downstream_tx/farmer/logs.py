"""The farmer's log: text lines (``2026-01-31T12:00:00Z [warn] message``) or JSON objects (one a line:
``time``, ``level``, ``message``, and the event's ``node``, ``protocol`` and ``cid`` when it has
them), to the log file and, unless the status view has the terminal, to standard output. Tokens are
never logged (farmers are named by their farmer id)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import IO, Any

import orjson
from twisted.logger import ILogObserver, LogLevel, formatEvent
from zope.interface import provider

#: event keys copied into a JSON line
FIELDS = ("node", "protocol", "cid")


def _when(event: dict[str, Any]) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(event.get("log_time") or time.time()))


#: the levels, lowest first
LEVELS = (LogLevel.debug, LogLevel.info, LogLevel.warn, LogLevel.error, LogLevel.critical)


def _level(event: dict[str, Any]) -> LogLevel:
    level = event.get("log_level")
    return level if level in LEVELS else LogLevel.info


def at_least(event: dict[str, Any], minimum: LogLevel) -> bool:
    return LEVELS.index(_level(event)) >= LEVELS.index(minimum)


def message_of(event: dict[str, Any]) -> str:
    text = formatEvent(event)
    failure = event.get("log_failure")
    if failure is not None:
        text += "\n" + failure.getTraceback()
    return text


def text_line(event: dict[str, Any]) -> str:
    return f"{_when(event)} [{_level(event).name}] {message_of(event)}\n"


def json_line(event: dict[str, Any]) -> str:
    out: dict[str, Any] = {"time": _when(event), "level": _level(event).name, "message": message_of(event)}
    for key in FIELDS:
        if key in event:
            out[key] = event[key]
    return orjson.dumps(out, default=str).decode() + "\n"


def ours(event: dict[str, Any]) -> bool:
    """The farmer's own events, and the libraries' warnings and errors (not their chatter: a
    connection pool's "Starting factory", the reactor's "Main loop terminated")."""
    return str(event.get("log_namespace", "")).startswith("downstream_tx") or at_least(event, LogLevel.warn)


def observer(stream: IO[str], json: bool, minimum: LogLevel = LogLevel.info) -> Callable[[dict[str, Any]], None]:
    """An observer writing each event of at least ``minimum`` level to ``stream``."""
    format_line = json_line if json else text_line

    @provider(ILogObserver)
    def observe(event: dict[str, Any]) -> None:
        if not at_least(event, minimum) or not ours(event):
            return
        stream.write(format_line(event))
        stream.flush()

    return observe


def warnings_to(note: Callable[[str], None]) -> Callable[[dict[str, Any]], None]:
    """An observer handing the text of each warning or error to ``note`` (the status view)."""

    @provider(ILogObserver)
    def observe(event: dict[str, Any]) -> None:
        if at_least(event, LogLevel.warn):
            note(f"{_when(event)} {formatEvent(event)}")

    return observe
