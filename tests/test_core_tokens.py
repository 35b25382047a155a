"""core.tokens: the token rule, the failed checks, and each protocol's rules table (the order of
its refusals and their words), on plain facts: no database."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest
from twisted.logger import globalLogPublisher

from downstream_tx import geoip
from downstream_tx.core import tokens
from downstream_tx.db.tokens import TokenFacts
from downstream_tx.errors import NodeError
from downstream_tx.v0.farming import TOKEN_RULES as V0
from downstream_tx.v1.wire import MSG_BAD_ADDRESS, MSG_NOT_WHITELISTED
from downstream_tx.v1.wire import TOKEN_RULES as V1
from support import ADDRESS, make_config, make_node, run, token_row

BAD = "1BoatSLRHtKNngkdXEeobR76b53LETtpyX"  # a checksum error


def facts(address=ADDRESS, balance=None, by_address=0, by_ip=0) -> TokenFacts:
    return TokenFacts(address, balance, by_address, by_ip)


def test_token_shape_and_hash():
    assert tokens.is_token("ab" * 16) and tokens.is_token("AB" * 16)
    for bad in ("ab" * 15, "ab" * 17, "zz" * 16, None, 7, " " + "a" * 31):
        assert not tokens.is_token(bad)
    token = "0f" * 16
    digest = hashlib.sha256(bytes.fromhex(token)).digest()
    assert tokens.hash_token(token) == digest and tokens.farmer_id_of(digest) == digest.hex()[:20]
    assert tokens.FARMER_ID_RE.match(digest.hex()[:20]) and not tokens.FARMER_ID_RE.match(digest.hex()[:20].upper())
    assert tokens.ip_limit_message(3) == "IP Disallowed, only 3 tokens are permitted per IP address"


def test_failed_checks(tmp_path):
    plain = make_config(tmp_path, max_tokens_per_ip=2, max_tokens_per_address=2)
    assert tokens.failed_checks(facts(), plain) == set()
    assert tokens.failed_checks(facts(by_ip=1, by_address=1), plain) == set()
    assert tokens.failed_checks(facts(BAD, by_ip=2, by_address=2), plain) == {
        tokens.IP_LIMIT, tokens.INVALID_ADDRESS, tokens.ADDRESS_LIMIT}
    unlimited = make_config(tmp_path, max_tokens_per_ip=0, max_tokens_per_address=0)
    assert tokens.failed_checks(facts(by_ip=10**6, by_address=10**6), unlimited) == set()
    listed = make_config(tmp_path, whitelist=True, min_balance=100)
    assert tokens.failed_checks(facts(balance=None), listed) == {tokens.NOT_WHITELISTED}
    assert tokens.failed_checks(facts(balance=99), listed) == {tokens.LOW_BALANCE}
    assert tokens.failed_checks(facts(balance=100), listed) == set()


def refusal(rules, f, config) -> NodeError:
    with pytest.raises(NodeError) as e:
        rules.admit(f, config)
    return e.value


def test_v0_order_and_words(tmp_path):
    config = make_config(tmp_path, whitelist=True, min_balance=100, max_tokens_per_ip=1, max_tokens_per_address=1)
    everything = facts(BAD, balance=None, by_address=1, by_ip=1)
    e = refusal(V0, everything, config)
    assert (e.kind, e.status) == ("invalid", "invalid_address") and e.message.startswith("invalid address: ")
    e = refusal(V0, facts(balance=None, by_address=1, by_ip=1), config)
    assert (e.kind, e.status, e.message) == ("forbidden", "not_whitelisted", "address is not in the whitelist")
    e = refusal(V0, facts(balance=5, by_address=1, by_ip=1), config)
    assert (e.status, e.message) == ("not_whitelisted", "address balance is under the minimum of 100")
    e = refusal(V0, facts(balance=100, by_address=1, by_ip=1), config)
    assert (e.kind, e.status, e.message) == ("limit", "limit_reached", "address already holds 1 tokens")
    e = refusal(V0, facts(balance=100, by_ip=1), config)
    assert (e.kind, e.status, e.message) == ("limit", "limit_reached",
                                             "IP Disallowed, only 1 tokens are permitted per IP address")
    assert V0.admit(facts(balance=100), config) is None


def test_v1_order_and_words(tmp_path):
    config = make_config(tmp_path, whitelist=True, min_balance=100, max_tokens_per_ip=1, max_tokens_per_address=1)
    e = refusal(V1, facts(BAD, balance=None, by_address=1, by_ip=1), config)
    assert (e.kind, e.status, e.message) == ("invalid", "error",
                                             "IP Disallowed, only 1 tokens are permitted per IP address")
    e = refusal(V1, facts(BAD, balance=None, by_address=1), config)
    assert e.message == MSG_BAD_ADDRESS
    assert refusal(V1, facts(balance=None, by_address=1), config).message == MSG_NOT_WHITELISTED
    assert refusal(V1, facts(balance=99, by_address=1), config).message == MSG_NOT_WHITELISTED
    e = refusal(V1, facts(balance=100, by_address=1), config)
    assert (e.status, e.message) == ("error", "Address limit reached, only 1 tokens are permitted per address")
    assert V1.admit(facts(balance=100), config) is None


def test_the_tables_name_every_check_once():
    checks = {tokens.IP_LIMIT, tokens.INVALID_ADDRESS, tokens.NOT_WHITELISTED, tokens.LOW_BALANCE,
              tokens.ADDRESS_LIMIT}
    for rules in (V0, V1):
        assert sorted(rules.order) == sorted(checks) and set(rules.refusal) == checks
    assert (V0.name, V1.name) == ("v0", "v1")


# --- the names of the checks, frozen rules -------------------------------------------------------------

def test_the_names_of_the_checks():
    """``failed_checks`` answers with these names (each protocol's ``TokenRules`` is keyed by them)."""
    assert (tokens.IP_LIMIT, tokens.INVALID_ADDRESS, tokens.NOT_WHITELISTED, tokens.LOW_BALANCE,
            tokens.ADDRESS_LIMIT) == ("ip_limit", "invalid_address", "not_whitelisted", "low_balance",
                                      "address_limit")


def test_token_rules_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        V0.name = "v9"  # type: ignore[misc]


# --- a new token's location and its log line (SQLite) --------------------------------------------------

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
