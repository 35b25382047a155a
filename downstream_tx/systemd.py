"""The systemd notification protocol (``sd_notify``), without a library.

systemd passes ``NOTIFY_SOCKET`` (a filesystem path, or ``@name`` for an abstract socket) to a
``Type=notify`` service; the service sends newline-separated ``KEY=VALUE`` datagrams to it:
``READY=1``, ``RELOADING=1`` (with ``MONOTONIC_USEC``), ``STOPPING=1``, ``WATCHDOG=1``.
Without ``NOTIFY_SOCKET`` every call is a no-op, so the daemon behaves the same outside systemd.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping

from twisted.logger import Logger

log = Logger()


class Notifier:
    def __init__(self, environ: Mapping[str, str] | None = None):
        environ = os.environ if environ is None else environ
        address = environ.get("NOTIFY_SOCKET") or None
        if address is not None and address.startswith("@"):
            address = "\0" + address[1:]
        self.address = address
        self._sock: socket.socket | None = None
        self._warned = False

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *fields: str) -> bool:
        """Send one datagram of ``fields`` (``"READY=1"``, …); False if not sent."""
        if self.address is None:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto("\n".join(fields).encode(), self.address)
        except OSError as e:
            if not self._warned:
                self._warned = True
                log.warn("cannot notify systemd ({error})", error=e.strerror or e.__class__.__name__)
            return False
        return True

    def ready(self) -> bool:
        return self.notify("READY=1")

    def reloading(self) -> bool:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def watchdog_interval(environ: Mapping[str, str] | None = None, pid: int | None = None) -> float | None:
    """Seconds between ``WATCHDOG=1`` pings (half of ``WATCHDOG_USEC``), or None when the watchdog
    is off or meant for another process (``WATCHDOG_PID``)."""
    environ = os.environ if environ is None else environ
    pid = os.getpid() if pid is None else pid
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    owner = environ.get("WATCHDOG_PID")
    if owner:
        try:
            if int(owner) != pid:
                return None
        except ValueError:
            return None
    return usec / 2 / 1_000_000


class PipeNotifier(Notifier):
    """The same notifications written as lines to a pipe: what a ``--workers`` child tells its
    parent (``workers.py``), which tells systemd once every worker is ready."""

    def __init__(self, fd: int):
        self.address = None
        self._sock = None
        self._warned = False
        self.fd = fd

    @property
    def enabled(self) -> bool:
        return True

    def notify(self, *fields: str) -> bool:
        try:
            os.write(self.fd, ("\n".join(fields) + "\n").encode())
        except OSError as e:
            if not self._warned:
                self._warned = True
                log.warn("cannot notify the parent process ({error})", error=e.strerror or e.__class__.__name__)
            return False
        return True

    def close(self) -> None:
        pass
