"""Where a file's replicas may go (docs/operations.md, "Reputation"): pure rules.

A file's replicas go to distinct farmers (payout addresses: every token of an address is one
farmer) and, unless switched off, to distinct networks: the /24 of an IPv4 address, the /48 of an
IPv6 address (an IPv4-mapped IPv6 address is its IPv4 address), both prefix lengths configurable.
The node stores only a hash of the network (:func:`network_key`), never the address."""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class PlacementRules:
    #: replicas of a file on distinct networks (``distinct_networks``); off for single-network setups
    distinct_networks: bool = True
    #: prefix lengths of a network (``network_prefix_v4``, ``network_prefix_v6``)
    v4_prefix: int = 24
    v6_prefix: int = 48


def network_of(ip: str | None, rules: PlacementRules) -> str | None:
    """The network of a client address as text (``192.0.2.0/24``), None when networks are not
    compared (switched off, no address, or not an IP address)."""
    if not rules.distinct_networks or not ip:
        return None
    try:
        address = ipaddress.ip_address(ip.strip().split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    prefix = rules.v4_prefix if address.version == 4 else rules.v6_prefix
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


def network_key(ip: str | None, rules: PlacementRules) -> str | None:
    """What the node stores of a client's network: 32 hex digits of its SHA-256 (None: see
    :func:`network_of`)."""
    network = network_of(ip, rules)
    return None if network is None else hashlib.sha256(network.encode("ascii")).hexdigest()[:32]


def may_hold(address: str, network: str | None, holders: Iterable[tuple[str, str | None]],
             failed_by: Iterable[str] = ()) -> bool:
    """May the farmer ``address`` on ``network`` take a replica of a file whose active replicas are
    held by ``holders`` (address, network), and whose contracts the farmers ``failed_by`` failed?
    Not when it holds one already (any of its tokens), nor when a replica is on its network (None:
    networks not compared), nor when it failed the file's contract before: a lost replica is
    repaired on another farmer, not handed back to the one that lost it (for as long as the node
    keeps the failed contract: until it is archived)."""
    return address not in set(failed_by) and all(a != address and (network is None or n != network)
                                                 for a, n in holders)
