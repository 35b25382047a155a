"""core/clients: the client key every per-client limit counts by. Properties over random addresses:
every spelling of one IPv4 address, and every address of one IPv6 /64, is one key; neighbours are
other keys."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from downstream_tx.core.clients import client_key, embedded_ipv4, parse_address
from downstream_tx.core.keys import NodeKeys

v4 = st.integers(min_value=0, max_value=(1 << 32) - 1).map(ipaddress.IPv4Address)


def v4_spellings(a: ipaddress.IPv4Address, pad: int, port: int) -> list[str]:
    n = int(a)
    octets = str(a).split(".")
    return [
        str(a), ".".join(o.zfill(pad) for o in octets), f"::ffff:{a}", f"::FFFF:{n >> 16:X}:{n & 0xFFFF:X}",
        f"0:0:0:0:0:ffff:{n >> 16:04x}:{n & 0xFFFF:04x}", f"::ffff:0:{a}", f"64:ff9b::{a}",
        f"[::ffff:{a}]", f"[::ffff:{a}]:{port}", f"{a}:{port}", f" {a}\t",
        f"2002:{n >> 16:x}:{n & 0xFFFF:x}::1",
        str(ipaddress.IPv6Address((0x20010000 << 96) | (n ^ 0xFFFFFFFF))),  # Teredo: the client obfuscated
    ]


@given(v4, st.integers(min_value=1, max_value=4), st.integers(min_value=0, max_value=65535))
def test_every_spelling_of_an_ipv4_address_is_one_key(address, pad, port):
    keys = {client_key(s) for s in v4_spellings(address, pad, port)}
    assert keys == {str(address)}


#: the upper 64 bits of global unicast addresses outside the forms that carry an IPv4 address
#: (2001::/32 Teredo, 2002::/16 6to4, ::/96, ::ffff:0:0/96, 64:ff9b::/96)
prefix64 = st.integers(min_value=0x2400 << 48, max_value=(0x4000 << 48) - 1)


@given(prefix64, st.integers(min_value=0, max_value=(1 << 64) - 1), st.integers(min_value=0, max_value=(1 << 64) - 1),
       st.booleans())
def test_every_address_of_an_ipv6_64_is_one_key(prefix, low, other_low, upper):
    address = ipaddress.IPv6Address(prefix << 64 | low)
    sibling = ipaddress.IPv6Address(prefix << 64 | other_low)
    assert embedded_ipv4(address) is None and embedded_ipv4(sibling) is None
    spelled = sibling.exploded.upper() if upper else f"[{sibling}]:443"
    key = client_key(str(address))
    assert key == client_key(spelled)
    assert ipaddress.IPv6Network(key).prefixlen == 64 and sibling in ipaddress.IPv6Network(key)


@given(v4)
def test_neighbouring_ipv4_addresses_are_other_keys(address):
    other = ipaddress.IPv4Address((int(address) + 1) % (1 << 32))
    assert client_key(str(address)) != client_key(str(other))


@pytest.mark.parametrize("text", ["", None, "not-an-ip", "1.2.3.4.5", "256.0.0.1", "[::1", "2001:db8::1::2",
                                  "1.2.3.4:99999", "300.000.0.1"])
def test_what_is_no_address_parses_to_none_and_is_its_own_key(text):
    assert parse_address(text) is None
    assert client_key(text) == (text or "").strip()


def test_loopback_and_unspecified_ipv6_are_not_read_as_ipv4():
    assert client_key("::1") == client_key("::") == "::/64"
    assert client_key("::2") == "0.0.0.2"  # the first v4-compatible address


def test_ports_up_to_65535():
    assert client_key("203.0.113.7:65535") == client_key("[::ffff:203.0.113.7]:0") == "203.0.113.7"
    assert parse_address("203.0.113.7:65536") is None and parse_address("[2001:db8::1]:65536") is None


def test_the_stored_hash_is_the_hash_of_the_key():
    keys = NodeKeys(b"k" * 32)
    assert keys.hash_ip("::ffff:10.0.0.1") == keys.hash_ip("10.000.0.001") == keys.hash_ip("10.0.0.1")
    assert keys.hash_ip("2001:db8::1") == keys.hash_ip("2001:DB8:0:0:ffff::2")
    assert keys.hash_ip("10.0.0.1") != keys.hash_ip("10.0.0.2")
    assert keys.hash_ip(None) is None and keys.hash_ip("") is None
