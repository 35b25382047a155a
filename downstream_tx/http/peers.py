"""Open connections per client, capped at accept so one client cannot hold the node's file
descriptors (186 idle connections from one address starved every other client of a node limited
to 200 descriptors).

A client is its client key (``ratelimit.client_key``: the address, the /64 of an IPv6 address, a
v4-mapped address folded to its IPv4 one), the same key the rate limits use. Peers listed in
``trusted_proxies`` are not capped (every farmer behind the proxy shares its address), nor are
connections without an IP address (a unix socket behind a proxy). The count is per process.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger

from downstream_tx.http.clients import in_networks
from downstream_tx.http.ratelimit import client_key

log = Logger(namespace="downstream_tx.requests")

#: seconds between two log lines about refused connections (a flood must not flood the log)
LOG_EVERY = 60.0


class ConnectionCap:
    """At most ``cap`` open connections per client key (0: no cap)."""

    def __init__(self, cap: int, exempt: tuple = (), clock: Any = None):
        self.cap = cap
        self.exempt = exempt
        self.clock = clock
        #: client key → open connections
        self.open: dict[str, int] = {}
        self._unlogged = 0
        self._logged_at: float | None = None

    def key(self, address: Any) -> str | None:
        """The key a connection from ``address`` counts under, None when it is not capped."""
        host = getattr(address, "host", None)
        if not self.cap or not host:
            return None
        key = client_key(host)
        if in_networks(host, self.exempt) or in_networks(key, self.exempt):  # (a v4-mapped proxy address)
            return None
        return key

    def admit(self, key: str | None) -> bool:
        """Count a new connection of ``key``; False when its client is at the cap (then it is not counted)."""
        if key is None:
            return True
        held = self.open.get(key, 0)
        if held >= self.cap:
            self._log_refusal()
            return False
        self.open[key] = held + 1
        return True

    def release(self, key: str | None) -> None:
        """A connection of ``key`` closed."""
        if key is None:
            return
        held = self.open.get(key, 0) - 1
        if held > 0:
            self.open[key] = held
        else:
            self.open.pop(key, None)

    def _log_refusal(self) -> None:
        self._unlogged += 1
        now = self.clock.seconds() if self.clock is not None else 0.0
        if self._logged_at is not None and now - self._logged_at < LOG_EVERY:
            return
        log.warn("closed {count} new connections at accept: their client already had {cap} open "
                 "(max_connections_per_client)", count=self._unlogged, cap=self.cap)
        self._unlogged, self._logged_at = 0, now
