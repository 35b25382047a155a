"""Per-client rate limits (token creation): a token bucket per client address on the node's clock.

Each client address has a bucket of ``per_minute`` requests that refills continuously at
``per_minute / 60`` requests a second, so a client may burst ``per_minute`` requests and then
gets one more every ``60 / per_minute`` seconds. Buckets are keyed by the client key
(``core/clients.py``: an IPv6 client by its /64, every spelling of an IPv4 address as one), the key
the per-IP token cap counts by too.

Memory is bounded: a bucket that has refilled completely is the same as no bucket and is dropped
when it is next looked at or when old buckets are swept; past ``max_clients`` buckets the least
recently used one is dropped (that client starts with a full bucket again: the limit fails open
for it rather than refusing everyone). The state of :class:`RateLimiter` is per process and in
memory: a restart forgets it. The daemon uses :class:`SharedRateLimiter`, the same rule with its
buckets in the database (``db/ratelimits.py``), so N processes or machines enforce one limit.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any

from downstream_tx.core.clients import client_key

#: default bound on the clients tracked at once (about 100 bytes each)
MAX_CLIENTS = 100_000


class RateLimiter:
    def __init__(self, per_minute: int, clock: Any, max_clients: int = MAX_CLIENTS):
        self.per_minute = per_minute
        self.clock = clock
        self.max_clients = max_clients
        self.rate = per_minute / 60.0
        #: key -> (tokens left, time of that count), least recently used first
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.per_minute > 0

    def __len__(self) -> int:
        return len(self._buckets)

    def check(self, ip: str | None) -> float:
        """Take one request from the client's bucket: 0.0 when allowed, else the seconds until the
        next request would be (nothing is taken from an empty bucket)."""
        if not self.enabled:
            return 0.0
        now = self.clock.seconds()
        key = client_key(ip or "")
        self._sweep(now)
        tokens, then = self._buckets.pop(key, (float(self.per_minute), now))
        tokens = min(float(self.per_minute), tokens + max(0.0, now - then) * self.rate)
        if tokens >= 1.0:
            tokens -= 1.0
            wait = 0.0
        else:
            wait = (1.0 - tokens) / self.rate
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return wait

    def _sweep(self, now: float, budget: int = 8) -> None:
        """Drop up to ``budget`` least recently used buckets that have refilled completely (an
        amortised sweep: memory follows the clients active in the last minute)."""
        full_after = self.per_minute / self.rate
        for _ in range(budget):
            if not self._buckets:
                return
            key, (tokens, then) = next(iter(self._buckets.items()))
            if now - then < full_after - tokens / self.rate:
                return
            del self._buckets[key]


class SharedRateLimiter:
    """:class:`RateLimiter`'s rule with the buckets in the database: ``store`` is the
    :class:`~downstream_tx.db.ratelimits.RateLimitStore`; buckets are keyed by ``hash_key`` of the
    client address, which must hash its client key (``NodeKeys.hash_ip`` does; no client address is
    stored). ``check`` fires with the seconds to wait."""

    def __init__(self, per_minute: int, clock: Any, store: Any, hash_key: Any):
        self.per_minute = per_minute
        self.clock = clock
        self.store = store
        self.hash_key = hash_key

    @property
    def enabled(self) -> bool:
        return self.per_minute > 0

    async def check(self, ip: str | None) -> float:
        if not self.enabled:
            return 0.0
        key = "rate:" + str(self.hash_key(ip or ""))
        return await self.store.take(key, float(self.per_minute), self.per_minute / 60.0, self.clock.seconds())


def retry_after(seconds: float) -> int:
    """A ``Retry-After`` value: whole seconds, at least 1."""
    return max(1, math.ceil(seconds))
