"""Abuse of token creation: the per-client rate limit (``token_rate``) and the per-IP token limit
(``max_tokens_per_ip``), on v0 ``/api/downstream/new`` and v1 ``/api/downstream/v1/new``, with the
client address taken from X-Forwarded-For only when the peer is a trusted proxy. Time is a
``task.Clock``."""

from __future__ import annotations

import orjson
import pytest
from treq.testing import StubTreq
from twisted.internet import task

from downstream_tx.http.ratelimit import RateLimiter, client_key
from support import make_address, make_config, make_node, make_resource, run

V0_NEW = "/api/downstream/new/{}"
V1_NEW = "/api/downstream/v1/new/{}"
ROUTES = [pytest.param(V0_NEW, id="v0"), pytest.param(V1_NEW, id="v1")]


class Client:
    def __init__(self, tmp_path, db_url, clock, **overrides):
        overrides.setdefault("max_tokens_per_address", 0)
        overrides.setdefault("max_tokens_per_ip", 0)
        self.config = make_config(tmp_path, db_url, **overrides)
        self.node = make_node(self.config, clock)
        self.treq = StubTreq(make_resource(self.node, self.config))

    def new(self, route: str, n: int, forwarded: str | None = None):
        headers = {"X-Forwarded-For": forwarded} if forwarded else {}
        resp = run(self.treq.get("http://node.test" + route.format(make_address(n)), headers=headers))
        body = orjson.loads(run(resp.content()))
        retry = resp.headers.getRawHeaders("retry-after")
        return resp.code, body, (retry[0] if retry else None)

    def tokens_of_ip(self, ip: str) -> int:
        ip_hash = self.node.keys.hash_ip(ip)
        return run(self.node.stores.tokens.count(ip_hash))


@pytest.fixture
def client(tmp_path, db_url, clock):
    made = []

    def factory(**overrides):
        c = Client(tmp_path, db_url, clock, **overrides)
        made.append(c)
        return c

    yield factory
    for c in made:
        c.node.db.close()


# --- token_rate -----------------------------------------------------------------------------------

@pytest.mark.parametrize("route", ROUTES)
def test_token_rate_refuses_with_429_and_retry_after(client, clock, route):
    c = client(token_rate=3)
    for n in range(3):
        assert c.new(route, n)[0] == 200
    code, body, retry = c.new(route, 3)
    assert code == 429
    assert retry == "20"  # one request every 60/3 s
    if route == V0_NEW:
        assert body["status"] == "rate_limited" and "20 seconds" in body["message"]
    else:
        assert body == {"status": "error", "message": "Too many token requests, try again in 20 seconds."}
    clock.advance(19)
    code, _, retry = c.new(route, 4)
    assert (code, retry) == (429, "1")
    clock.advance(1)
    assert c.new(route, 5)[0] == 200
    assert c.new(route, 6)[0] == 429  # refused requests take nothing, but the refill is one per 20 s


def test_the_limit_is_the_daemons_shared_one_across_instances(client, tmp_path, db_url, clock):
    """The test server is built as the daemon's (runtime.build_server): its limiter keeps the
    buckets in the database, so a client limited by one instance is limited by another over the
    same database."""
    from downstream_tx.http.ratelimit import SharedRateLimiter
    from support import make_server

    one, other = client(token_rate=2), client(token_rate=2)
    assert isinstance(make_server(one.node).token_limit.limiter, SharedRateLimiter)
    assert [one.new(V0_NEW, 1)[0], other.new(V1_NEW, 2)[0], one.new(V1_NEW, 3)[0]] == [200, 200, 429]
    assert other.new(V0_NEW, 4)[0] == 429


@pytest.mark.parametrize("route", ROUTES)
def test_token_rate_counts_refused_and_invalid_requests_too(client, route):
    c = client(token_rate=2)
    resp = run(c.treq.get("http://node.test" + route.format("1nvalid")))
    assert resp.code in (400, 404)
    assert c.new(route, 1)[0] == 200
    assert c.new(route, 2)[0] == 429


def test_token_rate_is_shared_by_v0_and_v1(client):
    c = client(token_rate=2)
    assert c.new(V0_NEW, 1)[0] == 200
    assert c.new(V1_NEW, 2)[0] == 200
    assert c.new(V0_NEW, 3)[0] == 429
    assert c.new(V1_NEW, 4)[0] == 429


def test_token_rate_zero_means_no_limit(client):
    c = client(token_rate=0)
    assert all(c.new(V0_NEW, n)[0] == 200 for n in range(40))


@pytest.mark.parametrize("route", ROUTES)
def test_token_rate_is_per_client_behind_a_trusted_proxy(client, route):
    c = client(token_rate=1, trusted_proxies="127.0.0.1")
    assert c.new(route, 1, forwarded="10.0.0.1")[0] == 200
    assert c.new(route, 2, forwarded="10.0.0.1")[0] == 429
    assert c.new(route, 3, forwarded="10.0.0.2")[0] == 200  # another client behind the same proxy
    assert c.new(route, 4, forwarded="10.0.0.9, 10.0.0.2")[0] == 429  # the last untrusted hop counts


@pytest.mark.parametrize("route", ROUTES)
def test_token_rate_ignores_x_forwarded_for_from_an_untrusted_peer(client, route):
    c = client(token_rate=1)  # no trusted proxies: the header is the client's own claim
    assert c.new(route, 1, forwarded="10.0.0.1")[0] == 200
    assert c.new(route, 2, forwarded="10.0.0.2")[0] == 429
    assert c.new(route, 3, forwarded="10.0.0.3, 10.0.0.4")[0] == 429


# --- max_tokens_per_ip behind a trusted proxy only ------------------------------------------------

@pytest.mark.parametrize("route", ROUTES)
def test_tokens_per_ip_counts_the_forwarded_client_behind_a_trusted_proxy(client, route):
    c = client(token_rate=0, max_tokens_per_ip=2, trusted_proxies="127.0.0.0/8")
    assert c.new(route, 1, forwarded="10.0.0.1")[0] == 200
    assert c.new(route, 2, forwarded="10.0.0.1")[0] == 200
    code, body, _ = c.new(route, 3, forwarded="10.0.0.1")
    assert code in (400, 429) and "2 tokens are permitted per IP" in body["message"]
    assert c.new(route, 4, forwarded="10.0.0.2")[0] == 200
    assert c.tokens_of_ip("10.0.0.1") == 2 and c.tokens_of_ip("10.0.0.2") == 1
    assert c.tokens_of_ip("127.0.0.1") == 0


@pytest.mark.parametrize("route", ROUTES)
def test_tokens_per_ip_ignores_x_forwarded_for_from_an_untrusted_peer(client, route):
    c = client(token_rate=0, max_tokens_per_ip=2, trusted_proxies="192.0.2.1")
    assert c.new(route, 1, forwarded="10.0.0.1")[0] == 200
    assert c.new(route, 2, forwarded="10.0.0.2")[0] == 200
    code, body, _ = c.new(route, 3, forwarded="10.0.0.3")  # a fresh header does not buy a fresh limit
    assert code in (400, 429) and "2 tokens are permitted per IP" in body["message"]
    assert c.tokens_of_ip("127.0.0.1") == 2
    assert c.tokens_of_ip("10.0.0.1") == 0


@pytest.mark.parametrize("forwarded", ["not-an-ip", "", " , ", "10.0.0.1 junk", "999.1.1.1", "[::1", "1.2.3.4.5",
                                       "256.000.0.1", "2001:db8::1::2"])
@pytest.mark.parametrize("route", ROUTES)
def test_junk_x_forwarded_for_from_a_trusted_proxy_falls_back_to_the_peer(client, route, forwarded):
    c = client(token_rate=0, max_tokens_per_ip=1, trusted_proxies="127.0.0.1")
    assert c.new(route, 1, forwarded=forwarded)[0] == 200
    assert c.new(route, 2, forwarded=forwarded)[0] in (400, 429)
    assert c.tokens_of_ip("127.0.0.1") == 1


# --- max_tokens_per_ip counts by the client key ------------------------------------------------------

#: other spellings of 203.0.113.7, as a proxy may write them
V4_SPELLINGS = ["::ffff:203.0.113.7", "::FFFF:203.0.113.7", "::ffff:cb00:7107", "0:0:0:0:0:ffff:cb00:7107",
                "::ffff:0:203.0.113.7", "203.000.113.007", "0203.0.113.7", "[::ffff:203.0.113.7]",
                "[::ffff:203.0.113.7]:4312", "203.0.113.7:4312", " 203.0.113.7 ", "64:ff9b::cb00:7107",
                "::203.0.113.7", "2002:cb00:7107::1", "2002:cb00:7107:ffff::2",
                "2001:0:4136:e378:8000:63bf:34ff:8ef8"]
#: other addresses and spellings in the /64 of 2001:db8:1:2::1
V6_SAME_64 = ["2001:DB8:1:2::3", "2001:0db8:0001:0002:0000:0000:0000:0004", "2001:db8:1:2:ffff:ffff:ffff:ffff",
              "[2001:db8:1:2::5]", "[2001:db8:1:2::6]:443", "2001:db8:1:2::7%eth0"]


@pytest.mark.parametrize("route", ROUTES)
def test_tokens_per_ip_counts_every_spelling_of_an_ipv4_client_as_one(client, route):
    c = client(token_rate=0, max_tokens_per_ip=2, trusted_proxies="127.0.0.1")
    assert c.new(route, 1, forwarded="203.0.113.7")[0] == 200
    assert c.new(route, 2, forwarded="::ffff:203.0.113.7")[0] == 200
    for n, spelling in enumerate(["203.0.113.7"] + V4_SPELLINGS, start=3):
        code, body, _ = c.new(route, n, forwarded=spelling)
        assert code in (400, 429) and "2 tokens are permitted per IP" in body["message"], (spelling, code, body)
    assert c.tokens_of_ip("203.0.113.7") == 2
    assert all(c.tokens_of_ip(spelling) == 2 for spelling in V4_SPELLINGS)
    assert c.new(route, 99, forwarded="203.0.113.8")[0] == 200  # the neighbour is another client


@pytest.mark.parametrize("route", ROUTES)
def test_tokens_per_ip_counts_an_ipv6_client_by_its_64(client, route):
    c = client(token_rate=0, max_tokens_per_ip=2, trusted_proxies="127.0.0.1")
    assert c.new(route, 1, forwarded="2001:db8:1:2::1")[0] == 200
    assert c.new(route, 2, forwarded="2001:db8:1:2::2")[0] == 200
    for n, spelling in enumerate(V6_SAME_64, start=3):
        code, body, _ = c.new(route, n, forwarded=spelling)
        assert code in (400, 429) and "2 tokens are permitted per IP" in body["message"], (spelling, code, body)
    assert c.tokens_of_ip("2001:db8:1:2::abcd") == 2
    assert c.new(route, 99, forwarded="2001:db8:1:3::1")[0] == 200  # the next /64 is another client


def test_a_token_used_from_another_address_of_its_client_does_not_move(tmp_path, db_url, clock):
    """v1 /chunk moves a token to a new client (and checks the cap there); another address of the
    same /64, or another spelling, is the same client: no move, no refusal at the cap."""
    from support.v1 import V1, build

    node, api = build(tmp_path, db_url, clock, max_tokens_per_ip=1, token_rate=0)
    try:
        run(node.pool.refill())
        token = api.new_token(forwarded="2001:db8:1:2::1")
        code, body = api.get(f"{V1}/chunk/{token}/4096", forwarded="2001:db8:1:2:aaaa::9")
        assert code == 200 and len(body["chunks"]) == 1, body
        v4 = api.new_token(address=make_address(2), forwarded="203.0.113.7")
        code, body = api.get(f"{V1}/chunk/{v4}/4096", forwarded="::ffff:203.0.113.7")
        assert code == 200 and len(body["chunks"]) == 1, body
    finally:
        node.db.close()


# --- the limiter itself ---------------------------------------------------------------------------

def test_limiter_memory_is_bounded_and_full_buckets_are_dropped():
    clock = task.Clock()
    limiter = RateLimiter(60, clock, max_clients=100)
    for n in range(1000):
        assert limiter.check(f"10.{n // 256}.{n % 256}.1") == 0.0
    assert len(limiter) == 100
    clock.advance(61)  # every bucket has refilled: each later check sweeps a few of them
    for _ in range(20):
        limiter.check("192.0.2.1")
    assert len(limiter) == 1  # only the client seen in the last minute


def test_limiter_keys_ipv6_by_64_and_mapped_ipv4_by_address():
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:bbbb::2") == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("::ffff:10.0.0.1") == "10.0.0.1"
    clock = task.Clock()
    limiter = RateLimiter(1, clock)
    assert limiter.check("2001:db8::1") == 0.0
    assert limiter.check("2001:db8::2") == 60.0


def test_limiter_refills_continuously():
    clock = task.Clock()
    limiter = RateLimiter(6, clock)
    assert [limiter.check("a") for _ in range(6)] == [0.0] * 6
    assert limiter.check("a") == pytest.approx(10.0)
    clock.advance(5)
    assert limiter.check("a") == pytest.approx(5.0)
    clock.advance(5)
    assert limiter.check("a") == 0.0
