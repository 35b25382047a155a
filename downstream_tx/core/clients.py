"""Who a client is, for every per-client limit: the *client key* of an address.

The token-request rate limit and the per-IP token cap (``max_tokens_per_ip``) count by this one key,
and the database keeps only a keyed hash of it (:meth:`~downstream_tx.core.keys.NodeKeys.hash_ip`):

- an IPv4 address is itself, however it was spelled (``203.000.113.007`` is ``203.0.113.7``: the
  octets are read as decimal);
- an IPv6 address that carries an IPv4 address is that IPv4 address: v4-mapped ``::ffff:a.b.c.d``,
  v4-translated ``::ffff:0:a.b.c.d``, v4-compatible ``::a.b.c.d``, NAT64 ``64:ff9b::a.b.c.d``,
  6to4 ``2002:AABB:CCDD::/48`` and Teredo (the client's address);
- any other IPv6 address is its /64 (one host usually holds a whole /64, so per-address keys would be
  free to multiply).

Spellings are folded before that: upper case, zero-padded groups, a ``%zone``, ``[brackets]`` and a
trailing ``:port``. A value that is no address at all is its own key.
"""

from __future__ import annotations

import ipaddress
import re

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

#: dotted-quad IPv4 with any zero padding (``ipaddress`` refuses leading zeros)
_PADDED_V4 = re.compile(r"([0-9]{1,8})\.([0-9]{1,8})\.([0-9]{1,8})\.([0-9]{1,8})")
#: an IPv4 address with a port (``203.0.113.7:4312``)
_V4_PORT = re.compile(r"([0-9.]+):([0-9]{1,5})")
#: a bracketed IPv6 address, maybe with a port (``[2001:db8::1]:4312``)
_BRACKETED = re.compile(r"\[([^\]]+)\](?::([0-9]{1,5}))?")

_V4_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_V4_COMPATIBLE = ipaddress.IPv6Network("::/96")


def parse_address(text: str | None) -> Address | None:
    """The address ``text`` spells (see the module's docstring for the spellings), or None."""
    if not text:
        return None
    text = text.strip()
    wrapped = _BRACKETED.fullmatch(text) or _V4_PORT.fullmatch(text)
    if wrapped:
        if int(wrapped.group(2) or 0) > 65535:
            return None
        text = wrapped.group(1)
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        pass
    padded = _PADDED_V4.fullmatch(text)
    if padded:
        octets = [int(o) for o in padded.groups()]
        if all(o <= 255 for o in octets):
            return ipaddress.IPv4Address(".".join(map(str, octets)))
    return None


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for, if it is one of the forms that carry one."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    packed = int(address)
    if address in _V4_TRANSLATED or address in _NAT64 or (address in _V4_COMPATIBLE and packed > 1):
        return ipaddress.IPv4Address(packed & 0xFFFFFFFF)
    return None


def client_key(ip: str | None) -> str:
    """The key every per-client limit counts by (see the module's docstring)."""
    address = parse_address(ip)
    if address is None:
        return (ip or "").strip()
    if isinstance(address, ipaddress.IPv6Address):
        v4 = embedded_ipv4(address)
        if v4 is not None:
            return str(v4)
        return str(ipaddress.IPv6Network((int(address) >> 64 << 64, 64)))
    return str(address)
