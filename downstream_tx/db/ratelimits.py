"""The per-client limits every instance shares (table ``rate_buckets``, schema step 006).

- :func:`take_txn`: the token-request rate limit (``token_rate``) as a token bucket per client,
  in the database, so N processes or machines enforce one limit, not N (``http/ratelimit.py``
  keeps the same rule in memory for a process of its own).
- :func:`lock_key_txn`: a row per key locked until commit, so that a count and the insert it
  guards (tokens per client IP, per address) are not interleaved by a concurrent transaction on
  any instance (READ COMMITTED InnoDB takes no gap locks: counting rows locks nothing new).

Keys are hashes of client addresses (``NodeKeys.hash_ip``), never the addresses. A bucket that
has refilled is the same as none: rows not touched for a refill period are deleted.
"""

from __future__ import annotations

import hashlib

from downstream_tx.db.database import Database, Txn

#: deleted (full again) when not touched for this many seconds past a full refill
SWEEP_EVERY = 100


def _ensure_txn(txn: Txn, key: str, tokens: float, now: float) -> None:
    """Make ``key``'s row if missing and lock it exclusively, in one statement: an upsert takes the
    row's exclusive lock at once (``INSERT IGNORE`` then ``SELECT … FOR UPDATE`` would take a shared
    lock first, and two transactions upgrading theirs deadlock)."""
    if txn.engine_name == "sqlite":
        txn.execute("INSERT INTO rate_buckets (bucket, tokens, updated) VALUES (?, ?, ?) "
                    "ON CONFLICT (bucket) DO UPDATE SET bucket = excluded.bucket", (key, tokens, now))
    else:
        txn.execute("INSERT INTO rate_buckets (bucket, tokens, updated) VALUES (?, ?, ?) "
                    "ON DUPLICATE KEY UPDATE bucket = bucket", (key, tokens, now))


def digest(text: str) -> str:
    """A fixed-length key part for any text (an address as the farmer sent it, before it is checked)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def lock_key_txn(txn: Txn, key: str, now: float = 0.0) -> None:
    """Lock ``key``'s row (made if missing) until this transaction ends (``now``: when, for the
    sweep; 0: the next sweep deletes it)."""
    _ensure_txn(txn, key, 0.0, now)
    txn.execute("UPDATE rate_buckets SET updated = ? WHERE bucket = ?", (now, key))


def take_txn(txn: Txn, key: str, capacity: float, per_second: float, now: float) -> float:
    """Take one request from ``key``'s bucket (``capacity`` requests, refilled at ``per_second``):
    0.0 when allowed, else the seconds until one would be (nothing is taken from an empty bucket)."""
    _ensure_txn(txn, key, capacity, now)
    tokens, then = txn.execute("SELECT tokens, updated FROM rate_buckets WHERE bucket = ?" + txn.for_update(),
                               (key,)).fetchone()
    tokens = min(capacity, float(tokens) + max(0.0, now - float(then)) * per_second)
    if tokens >= 1.0:
        tokens -= 1.0
        wait = 0.0
    else:
        wait = (1.0 - tokens) / per_second
    txn.execute("UPDATE rate_buckets SET tokens = ?, updated = ? WHERE bucket = ?", (tokens, now, key))
    return wait


def sweep_txn(txn: Txn, before: float) -> int:
    """Delete the rows not touched since ``before`` (full buckets, released locks)."""
    return max(txn.execute("DELETE FROM rate_buckets WHERE updated < ?", (before,)).rowcount, 0)


class RateLimitStore:
    def __init__(self, db: Database):
        self.db = db
        self._calls = 0

    def take(self, key: str, capacity: float, per_second: float, now: float):
        """Fires with the seconds to wait (0.0: allowed; see :func:`take_txn`); every
        ``SWEEP_EVERY`` calls also deletes the buckets full again (untouched for a refill period)."""
        self._calls += 1
        sweep = self._calls % SWEEP_EVERY == 0

        def body(txn: Txn) -> float:
            wait = take_txn(txn, key, capacity, per_second, now)
            if sweep:
                sweep_txn(txn, now - capacity / per_second)
            return wait

        return self.db.run("rate_limit", body)

    def sweep(self, before: float):
        """Fires with the rows deleted (see :func:`sweep_txn`)."""
        return self.db.run("rate_limit_sweep", sweep_txn, before)
