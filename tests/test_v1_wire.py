"""v1/wire (and the shared downstream_tx/wire) called directly: the constants and messages of the
protocol, the v1 token rules' order and words, the heartbeat body, ``as_int``, ``contract_ids`` and
its bound, ``proof_key``, ``plain``. No database, no HTTP."""

from __future__ import annotations

import inspect
from decimal import Decimal

import orjson
import pytest

from downstream_tx import wire as shared
from downstream_tx.core import tokens
from downstream_tx.db.tokens import TokenFacts
from downstream_tx.errors import NodeError
from downstream_tx.v1 import wire
from downstream_tx.v1.farming import V1Farming
from support import ADDRESS, make_config

BAD = "1BoatSLRHtKNngkdXEeobR76b53LETtpyX"  # a checksum error


# --- the constants, the token rules and the messages ---------------------------------------------------

def test_wire_constants():
    assert shared.V1_PREFIX == "/api/downstream/v1"
    assert shared.HEARTBEAT_TYPE == wire.HEARTBEAT_TYPE == "Merkle"
    # /chunk without a size asks for 32 MiB (the original's default)
    assert shared.DEFAULT_CHUNK_SIZE == 32 * 1024 * 1024
    assert inspect.signature(V1Farming.chunks).parameters["size"].default == 32 * 1024 * 1024
    assert shared.MAX_ITEMS == wire.MAX_ITEMS == 5000


def refusal(facts: TokenFacts, config) -> NodeError:
    with pytest.raises(NodeError) as e:
        wire.TOKEN_RULES.admit(facts, config)
    return e.value


def test_v1_token_rules_words(tmp_path):
    config = make_config(tmp_path, whitelist=True, min_balance=100, max_tokens_per_ip=3, max_tokens_per_address=2)
    assert wire.TOKEN_RULES.name == "v1"
    assert wire.TOKEN_RULES.order == (tokens.IP_LIMIT, tokens.INVALID_ADDRESS, tokens.NOT_WHITELISTED,
                                      tokens.LOW_BALANCE, tokens.ADDRESS_LIMIT)
    e = refusal(TokenFacts(ADDRESS, 100, 2, 0), config)
    assert (e.kind, e.status, e.message) == ("invalid", "error",
                                             "Address limit reached, only 2 tokens are permitted per address")
    e = refusal(TokenFacts(ADDRESS, 100, 0, 3), config)
    assert (e.kind, e.status, e.message) == ("invalid", "error",
                                             "IP Disallowed, only 3 tokens are permitted per IP address")
    e = refusal(TokenFacts(BAD, 100, 0, 0), config)
    assert (e.kind, e.status, e.message) == ("invalid", "error", wire.MSG_BAD_ADDRESS)
    assert refusal(TokenFacts(ADDRESS, None, 0, 0), config).message == wire.MSG_NOT_WHITELISTED
    assert refusal(TokenFacts(ADDRESS, 99, 0, 0), config).message == wire.MSG_NOT_WHITELISTED
    assert wire.TOKEN_RULES.admit(TokenFacts(ADDRESS, 100, 1, 2), config) is None


def test_v1_messages():
    assert shared.NONEXISTENT_TOKEN == "Nonexistent token."
    assert wire.NONEXISTENT_FARMER == "Nonexistant farmer id."
    assert wire.MSG_BAD_ADDRESS == "Invalid address given: address is not a valid SJCX address."
    assert wire.MSG_NOT_WHITELISTED == "Invalid address given: address must be in whitelist."
    assert wire.MSG_INVALID_SORT == "Invalid sort."
    assert wire.MSG_SIGNATURE_INVALID == "Signature invalid."
    assert wire.MSG_SIGNATURE_LENGTH == "Your signature is the wrong length.  It should be 88bytes."
    e = wire.v1_error("x")
    assert (e.kind, e.status, e.message) == ("invalid", "error", "x")
    e = wire.v1_error("y", "not_found")
    assert (e.kind, e.status, e.message) == ("not_found", "error", "y")


def test_heartbeat_body():
    assert wire.heartbeat_body("t", 0.25) == {"token": "t", "type": "Merkle",
                                               "heartbeat": {"key": "", "check_fraction": 0.25}}


# --- items of a request body ---------------------------------------------------------------------------

@pytest.mark.parametrize("item, value", [(7, 7), ("8", 8), (" 9 ", 9), (True, 1), (Decimal("3.9"), 3), (2.5, 2)])
def test_as_int(item, value):
    assert wire.as_int(item) == value


@pytest.mark.parametrize("item, error", [({}, TypeError), ([], TypeError), (None, TypeError), ({"a": 1}, TypeError),
                                         ([1], TypeError), ("x", ValueError), ("1.5", ValueError)])
def test_as_int_refuses(item, error):
    with pytest.raises(error):
        wire.as_int(item)


@pytest.mark.parametrize("item", [{}, [], None, {"a": 1}, [1]])
def test_as_int_refuses_containers_and_null_itself(item):
    with pytest.raises(TypeError, match="^not a number$"):
        wire.as_int(item)


def test_contract_ids_stops_reading_at_max_items():
    """A streamed body is not read past the bound (nor is an endless one)."""
    taken = []

    def endless():
        n = 1
        while True:
            assert len(taken) <= wire.MAX_ITEMS, "read past the bound"
            taken.append(n)
            yield n
            n += 1

    got = wire.contract_ids(endless(), lambda item: item)
    assert len(got) == wire.MAX_ITEMS and len(taken) == wire.MAX_ITEMS + 1


def test_contract_ids():
    # as sent, the id, the item; duplicates collapse, the first wins
    items = [{"file_hash": "5", "n": 1}, {"file_hash": 5, "n": 2}, {"file_hash": 6}]
    assert wire.contract_ids(items, wire.proof_key) == [("5", 5, items[0]), (6, 6, items[2])]
    # each error ends the list
    for bad in ([1, [2], 3], [1, "x", 3], [1, float("inf"), 3], [1, None, 3]):
        assert wire.contract_ids(bad, lambda item: item) == [(1, 1, 1)]
    assert wire.contract_ids([{"file_hash": 1}, {"x": 2}, {"file_hash": 3}], wire.proof_key) == [
        (1, 1, {"file_hash": 1})]
    assert wire.contract_ids([{"file_hash": 1}, 7, {"file_hash": 3}], wire.proof_key) == [(1, 1, {"file_hash": 1})]
    assert wire.contract_ids([], lambda item: item) == []
    # the bound counts items looked at, not ids kept
    assert len(wire.contract_ids([1] * 4999 + [2, 3], lambda item: item)) == 2


def test_proof_key():
    assert wire.proof_key({"file_hash": 3, "proof": {}}) == 3
    for item in ([("file_hash", 3)], "file_hash", 3, None):
        with pytest.raises(TypeError, match="^a proof item must be an object$"):
            wire.proof_key(item)
    with pytest.raises(KeyError):
        wire.proof_key({"proof": {}})


def test_plain():
    assert wire.plain(Decimal("1.5")) == 1.5 and type(wire.plain(Decimal("1.5"))) is float
    assert wire.plain(5) == 5 and wire.plain(True) is True and wire.plain("x") == "x"
    for n in (-(1 << 63), (1 << 64) - 1, 0):
        assert wire.plain(n) == n and type(wire.plain(n)) is int
    for n in (1 << 64, -(1 << 63) - 1, 10**30):
        frag = wire.plain(n)
        assert isinstance(frag, orjson.Fragment) and orjson.dumps([frag]) == f"[{n}]".encode()
