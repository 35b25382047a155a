"""Waiting for a node that is down or busy: exponential backoff with full jitter (so that farmers do
not come back all at once when a node returns), never earlier than the node's ``Retry-After``."""

from __future__ import annotations

import random


class Backoff:
    """After the ``n``-th failure in a row the next try waits a random time in
    ``[base / 2, min(cap, base * 2^(n-1))]``; a ``Retry-After`` of ``r`` seconds makes it
    ``r`` plus a random share of up to a quarter of ``r`` (and at least ``base / 2``) on top. A
    success starts again from the first step."""

    def __init__(self, base: float = 1.0, cap: float = 300.0, rng: random.Random | None = None):
        if not 0 < base <= cap:
            raise ValueError("backoff needs 0 < base <= cap")
        self.base = base
        self.cap = cap
        self.rng = rng or random.Random()
        self.failures = 0

    def failed(self, retry_after: float | None = None) -> float:
        """Seconds to wait after one more failure."""
        self.failures += 1
        if retry_after is not None and retry_after > 0:
            return retry_after + self.rng.uniform(0, max(self.base / 2, retry_after / 4))
        ceiling = min(self.cap, self.base * 2.0 ** min(self.failures - 1, 64))
        return self.rng.uniform(min(self.base / 2, ceiling), ceiling)

    def succeeded(self) -> None:
        self.failures = 0
