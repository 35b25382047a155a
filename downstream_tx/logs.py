"""Log output: readable text (default) or JSON lines, to standard output or a reopenable file.

``twistd`` starts the global log publisher itself (``AppLogger.start``) before the reactor runs,
using the ``twisted.logger.ILogObserver`` component of the application when there is one. The
node's service sets that component when it is attached to the application (see
``NodeService.setServiceParent``), so ``twistd -n downstream --log-format json`` and
``twistd -n -y downstream.tac`` both log through :class:`LogOutput`. An explicit ``twistd --logger``
still wins; ``twist`` has its own ``--log-format``/``--log-file`` options.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import IO, Any

import orjson
from twisted.internet.task import LoopingCall
from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    formatEvent,
)
from twisted.logger import formatEventAsClassicLogText as _classic
from zope.interface import implementer

#: keys of legacy (twisted.python.log) events that are not payload
_LEGACY_KEYS = {"message", "isError", "system", "time", "format", "why", "failure", "printed"}


#: (whole second, its ``%Y-%m-%dT%H:%M:%S``) of the last time formatted
_last_second: tuple[int, str] = (-1, "")


def _iso(t: float | None) -> str:
    global _last_second
    t = time.time() if t is None else t
    second = int(t // 1)
    if _last_second[0] != second:
        _last_second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)))
    return _last_second[1] + f".{int((t % 1) * 1000):03d}Z"


#: an event field holding the event's message already formatted (the request log sets it: one
#: line per request, formatted once); ``log_`` keys are not payload, so JSON lines leave it out
PREFORMATTED = "log_dtx_text"


def escape_format(text: str) -> str:
    """``text`` as a format string that formats to itself."""
    return text.replace("{", "{{").replace("}", "}}") if "{" in text or "}" in text else text


def _message(event: dict[str, Any]) -> str:
    text = event.get(PREFORMATTED)
    return text if isinstance(text, str) else formatEvent(event)


#: the namespace shown for events of Twisted's legacy ``log.msg`` API, which carry none ("-")
LEGACY_NAMESPACE = "twisted"


def namespace_of(event: dict[str, Any]) -> str:
    """The event's namespace; legacy ``log.msg`` events (``log_legacy``, system ``-``) get their
    system when they name one, else ``twisted`` — never a bare ``-``."""
    namespace = event.get("log_namespace")
    if namespace and namespace != "log_legacy":
        return namespace
    system = event.get("log_system") or event.get("system")
    return system if system and system != "-" else LEGACY_NAMESPACE


def text_line(event: dict[str, Any]) -> str | None:
    """``2026-01-02T03:04:05.678Z [namespace#info] message`` (a traceback follows a failure)."""
    level = event.get("log_level")
    text = event.get(PREFORMATTED)
    if isinstance(text, str) and "log_failure" not in event and "\n" not in text:
        return f"{_iso(event.get('log_time'))} [{namespace_of(event)}#{getattr(level, 'name', 'info')}] {text}\n"
    event = {**event, "log_system": f"{namespace_of(event)}#{getattr(level, 'name', 'info')}"}
    return _classic(event, formatTime=lambda t: _iso(t))


def json_line(event: dict[str, Any]) -> str:
    """One JSON object per line: time, level, namespace, message, then the event's own fields."""
    level = event.get("log_level")
    out: dict[str, Any] = {
        "time": _iso(event.get("log_time")),
        "level": getattr(level, "name", "info"),
        "namespace": namespace_of(event),
        "message": _message(event),
    }
    for key, value in event.items():
        if key.startswith("log_") or key in _LEGACY_KEYS or key in out:
            continue
        out[key] = value
    failure = event.get("log_failure") or event.get("failure")
    if failure is not None:
        out["traceback"] = failure.getTraceback()
        if out["level"] == "info":
            out["level"] = "error"
    elif event.get("isError"):
        out["level"] = "error"
    return orjson.dumps(out, default=str, option=orjson.OPT_NON_STR_KEYS).decode() + "\n"


#: a new log file: the node's user and its group (logs hold no secrets, but farmer ids and hashed IPs)
LOG_FILE_MODE = 0o640


def _open_log(path: str) -> IO[str]:
    return open(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, LOG_FILE_MODE), "a", encoding="utf-8")


class LogOutput:
    """A text stream: standard output, or a file opened for append that :meth:`reopen` re-opens
    (after logrotate moved it; ``SIGHUP``). With ``buffer_bytes`` (the daemon's
    :data:`LOG_BUFFER`), the per-line :meth:`flush` the observer calls writes the lines out only
    once that many are pending; :meth:`flush_now` writes them at once (a warning or worse,
    :meth:`reopen`, :meth:`close`, and the timer of :meth:`LogSetup.start_flushing`)."""

    def __init__(self, path: str | None = None, stream: IO[str] | None = None, buffer_bytes: int = 0):
        self.path = path
        self.buffer_bytes = buffer_bytes
        self._pending = 0
        self._lock = threading.Lock()
        self._stream: IO[str] = _open_log(path) if path else (stream or sys.stdout)

    def write(self, text: str) -> None:
        with self._lock:
            self._stream.write(text)
            self._pending += len(text)

    def flush(self) -> None:
        if self._pending >= self.buffer_bytes:
            self.flush_now()

    def flush_now(self) -> None:
        with self._lock:
            self._pending = 0
            self._stream.flush()

    def reopen(self) -> None:
        if not self.path:
            return
        self.flush_now()
        with self._lock:
            old = self._stream
            self._stream = _open_log(self.path)
            old.close()

    def close(self) -> None:
        self.flush_now()
        if self.path:
            with self._lock:
                self._stream.close()


#: the daemon's request log: lines pending before they are written out (or a second passes, or a
#: warning comes); the per-line write was a system call per request
LOG_BUFFER = 64 << 10
LOG_FLUSH_INTERVAL = 1.0


@implementer(ILogObserver)
class _Writer:
    """Twisted's ``FileLogObserver``, but one that writes a warning or worse out at once."""

    def __init__(self, output: LogOutput, formatter: Any):
        self.output, self.formatter = output, formatter

    def __call__(self, event: dict[str, Any]) -> None:
        text = self.formatter(event)
        if text:
            self.output.write(text)
            level = event.get("log_level")
            if level is not None and level >= LogLevel.warn:
                self.output.flush_now()
            else:
                self.output.flush()


def make_observer(output: LogOutput, log_format: str = "text",
                  level: LogLevel = LogLevel.info) -> ILogObserver:
    """An observer writing ``log_format`` lines at ``level`` and above to ``output``."""
    formatter = json_line if log_format == "json" else text_line
    return FilteringLogObserver(_Writer(output, formatter), [LogLevelFilterPredicate(level)])


class LogSetup:
    """The daemon's log output and observer, built from the configuration (``buffer_bytes``: see
    :class:`LogOutput`; buffered, its lines also need :meth:`start_flushing`)."""

    def __init__(self, log_format: str = "text", log_file: str | None = None, stream: IO[str] | None = None,
                 buffer_bytes: int = 0):
        self.output = LogOutput(log_file, stream, buffer_bytes)
        self.observer = make_observer(self.output, log_format)

    def reopen(self) -> None:
        self.output.reopen()

    def start_flushing(self, clock: Any, interval: float = LOG_FLUSH_INTERVAL) -> LoopingCall:
        """Write pending lines out every ``interval`` seconds of ``clock`` (the caller's reactor);
        stop the returned call, then :meth:`LogOutput.flush_now`, at shutdown."""
        flusher = LoopingCall(self.output.flush_now)
        flusher.clock = clock
        flusher.start(interval, now=False)
        return flusher
