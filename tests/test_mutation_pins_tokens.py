"""Pins for the token and limit rules (``core/tokens.py``, ``http/ratelimit.py``): each test fails on
a mutant that survived the other tests (docs/testing.md, "Latest scores"). Plain objects and a
``task.Clock``: no database, no HTTP."""

from __future__ import annotations

import dataclasses

import pytest
from twisted.internet import task
from twisted.logger import globalLogPublisher

from downstream_tx import geoip
from downstream_tx.core import tokens
from downstream_tx.http import ratelimit
from downstream_tx.http.ratelimit import RateLimiter, client_key, retry_after
from downstream_tx.v0.farming import TOKEN_RULES as V0
from support import ADDRESS, make_config, make_node, run, token_row

# --- core/tokens.py -------------------------------------------------------------------------------


def test_the_names_of_the_checks():
    """``failed_checks`` answers with these names (each protocol's ``TokenRules`` is keyed by them)."""
    assert (tokens.IP_LIMIT, tokens.INVALID_ADDRESS, tokens.NOT_WHITELISTED, tokens.LOW_BALANCE,
            tokens.ADDRESS_LIMIT) == ("ip_limit", "invalid_address", "not_whitelisted", "low_balance",
                                      "address_limit")



def test_token_rules_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        V0.name = "v9"  # type: ignore[misc]


class FakeLocator:
    """A GeoIP database already loaded, that places every address in one country."""

    loaded = True

    def __init__(self):
        self.asked: list[str | None] = []

    def locate(self, ip):
        self.asked.append(ip)
        return geoip.Location("Testland")


@pytest.fixture
def located(tmp_path, clock):
    node = make_node(make_config(tmp_path), clock)
    yield dataclasses.replace(node, locator=FakeLocator())
    node.db.close()


def tokens_of(node) -> tokens.Tokens:
    """The node's token service, built over the node's locator."""
    return tokens.Tokens(node.stores.tokens, node.config, node.clock, node.keys.hash_ip, node.locator, node.blocking)


def test_a_new_token_is_located_by_its_ip(located):
    made = tokens_of(located)
    assert run(made.locate("8.8.8.8")) == geoip.Location("Testland")
    token = run(made.create(ADDRESS, "8.8.8.8", V0))
    assert geoip.location_from_json(token_row(located, token).location)["country"] == "Testland"
    assert located.locator.asked == ["8.8.8.8", "8.8.8.8"]


def test_a_given_location_is_stored_as_given_and_nothing_is_looked_up(located):
    given = geoip.Location("Elsewhere").to_json()
    token = run(tokens_of(located).create(ADDRESS, "8.8.8.8", V0, location=given))
    assert token_row(located, token).location == given
    assert located.locator.asked == []


def test_a_new_token_is_logged_with_its_protocol_and_farmer_id_never_the_token(located):
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        token = run(tokens_of(located).create(ADDRESS, "127.0.0.1", V0))
    finally:
        globalLogPublisher.removeObserver(events.append)
    farmer_id = tokens.farmer_id_of(tokens.hash_token(token))
    mine = [e for e in events if e.get("log_namespace") == "downstream_tx.core.tokens"]
    assert [(e["log_format"], e["protocol"], e["farmer_id"]) for e in mine] == [
        ("{protocol} token created for farmer {farmer_id}", "v0", farmer_id)]
    assert token not in repr(events)


# --- http/ratelimit.py ----------------------------------------------------------------------------


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

