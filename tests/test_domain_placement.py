"""domain/placement.py: a file's replicas on distinct payout addresses and networks. Pure."""

from __future__ import annotations

import dataclasses

import pytest

from downstream_tx.domain import placement


@pytest.mark.parametrize(("ip", "network"), [
    ("203.0.113.77", "203.0.113.0/24"),
    ("::ffff:203.0.113.9", "203.0.113.0/24"),  # IPv4-mapped: its IPv4 address
    ("2001:db8:1:ffff::2", "2001:db8:1::/48"),
    ("fe80::1%eth0", "fe80::/48"),
    # the zone is cut off before parsing: its text never matters, even one ipaddress would reject
    ("fe80::1%", "fe80::/48"),
    ("fe80::1%a%b", "fe80::/48"),
    ("not an address", None),
    ("", None),
    (None, None),
])
def test_the_network_of_an_address(ip, network):
    assert placement.network_of(ip, placement.PlacementRules()) == network


def test_prefix_lengths_and_the_off_switch():
    assert placement.network_of("203.0.113.77", placement.PlacementRules(v4_prefix=16)) == "203.0.0.0/16"
    assert placement.network_of("2001:db8:1:2::1", placement.PlacementRules(v6_prefix=64)) == "2001:db8:1:2::/64"
    assert placement.network_of("203.0.113.77", placement.PlacementRules(distinct_networks=False)) is None
    key = placement.network_key("203.0.113.77", placement.PlacementRules())
    assert key == placement.network_key("203.0.113.1", placement.PlacementRules()) and len(key) == 32
    assert "203" not in key or key.isalnum()  # a hash, not the address


def test_may_hold_distinct_addresses_and_networks():
    holders = [("a", "n1"), ("b", None)]
    assert not placement.may_hold("a", "n9", holders)
    assert not placement.may_hold("c", "n1", holders)
    assert placement.may_hold("c", "n2", holders)
    assert placement.may_hold("c", None, holders)  # networks not compared


def test_a_farmer_that_failed_a_file_may_not_hold_it_again():
    assert not placement.may_hold("c", "n2", [], failed_by=["c"])
    assert placement.may_hold("d", "n2", [], failed_by=["c"])  # only the farmer that failed it
    assert not placement.may_hold("d", "n1", [("a", "n1")], failed_by=["c"])  # the other rules still hold


def test_the_placement_rules_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        placement.PlacementRules().v4_prefix = 16  # type: ignore[misc]
