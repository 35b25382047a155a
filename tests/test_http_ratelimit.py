"""http/ratelimit's in-process ``RateLimiter`` called directly, with a ``task.Clock``: its bound on
tracked clients, the client keys, a disabled limiter, the exact edges of a bucket, the least recently
used client dropped, the sweep of full buckets, ``retry_after``. (Through HTTP, and the shared
limiter: tests/test_abuse_tokens.py.)"""

from __future__ import annotations

import pytest
from twisted.internet import task

from downstream_tx.http import ratelimit
from downstream_tx.http.ratelimit import RateLimiter, client_key, retry_after


def test_the_default_bound_on_tracked_clients():
    assert ratelimit.MAX_CLIENTS == 100_000
    assert RateLimiter(1, task.Clock()).max_clients == 100_000


def test_client_keys_of_non_addresses_and_of_ipv4():
    assert client_key("not-an-ip") == "not-an-ip"
    assert client_key("") == ""
    assert client_key("10.0.0.1") == "10.0.0.1"
    assert client_key("2001:db8:1:2:ffff:ffff:ffff:ffff") == "2001:db8:1:2::/64"
    assert client_key("::1") == "::/64"


def test_a_disabled_limiter_allows_everything_and_tracks_nothing():
    limiter = RateLimiter(0, task.Clock())
    assert limiter.enabled is False
    assert [limiter.check("10.0.0.1") for _ in range(5)] == [0.0] * 5
    assert len(limiter) == 0
    assert RateLimiter(1, task.Clock()).enabled is True


def test_exactly_one_request_left_is_allowed_and_taken():
    clock = task.Clock()
    limiter = RateLimiter(60, clock)  # one a second: exact floats
    assert [limiter.check("a") for _ in range(60)] == [0.0] * 60
    assert limiter.check("a") == 1.0
    clock.advance(1)  # exactly one request back
    assert limiter.check("a") == 0.0
    assert limiter.check("a") == 1.0  # and it was taken


def test_an_empty_bucket_waits_for_exactly_one_request():
    clock = task.Clock()
    limiter = RateLimiter(2, clock)  # one every 30 s
    assert limiter.check("a") == 0.0 and limiter.check("a") == 0.0
    assert limiter.check("a") == 30.0
    clock.advance(12)
    assert limiter.check("a") == pytest.approx(18.0)


def test_the_least_recently_used_client_is_dropped_past_the_bound():
    clock = task.Clock()
    limiter = RateLimiter(1, clock, max_clients=2)
    for ip in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
        assert limiter.check(ip) == 0.0
    assert len(limiter) == 2
    assert limiter.check("10.0.0.3") == 60.0  # the newest is still tracked
    assert limiter.check("10.0.0.2") == 60.0
    assert limiter.check("10.0.0.1") == 0.0  # the oldest was dropped: a full bucket again


def test_a_sweep_drops_at_most_eight_full_buckets():
    clock = task.Clock()
    limiter = RateLimiter(6, clock)  # one request back every 10 s
    for n in range(20):
        limiter.check(f"10.0.0.{n}")  # 5 of 6 left: full again after 10 s
    clock.advance(9)  # not full yet: nothing is dropped
    limiter.check("192.0.2.1")
    assert len(limiter) == 21
    clock.advance(1)  # every bucket but the new one is full
    limiter.check("192.0.2.2")
    assert len(limiter) == 21 - 8 + 1


def test_a_bucket_is_dropped_the_moment_it_is_full_again():
    clock = task.Clock()
    limiter = RateLimiter(60, clock)
    limiter.check("a")  # 59 left: full again after 1 s
    clock.advance(0.5)
    limiter.check("b")
    assert len(limiter) == 2
    clock.advance(0.5)
    limiter.check("c")
    assert len(limiter) == 2  # "a" went, "b" and "c" are tracked


def test_retry_after_is_whole_seconds_and_at_least_one():
    assert retry_after(0.0) == 1
    assert retry_after(0.2) == 1
    assert retry_after(1.0) == 1
    assert retry_after(1.01) == 2
    assert retry_after(20.0) == 20
