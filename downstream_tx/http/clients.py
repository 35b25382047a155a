"""Who is asking: the client's address (behind trusted proxies), and the token-request rate limit
per client address that both protocols' ``/new`` share."""

from __future__ import annotations

import ipaddress
from typing import Any

from twisted.logger import Logger
from twisted.web.iweb import IRequest

from downstream_tx.config import Config
from downstream_tx.core.clients import parse_address
from downstream_tx.http.errors import ApiError
from downstream_tx.http.ratelimit import RateLimiter, SharedRateLimiter, retry_after

log = Logger()


def client_ip(request: IRequest, config: Config) -> str:
    """The client's address: the peer, or the last untrusted X-Forwarded-For hop when the peer is
    a configured trusted proxy (any spelling ``core/clients.py`` reads, given in its canonical
    form; a hop that is no address falls back to the peer). Limits count it by its client key."""
    peer = getattr(request.getClientAddress(), "host", None) or ""
    if not config.trusted_proxies or not in_networks(peer, config.trusted_proxies):
        return peer
    raw = request.getHeader(b"x-forwarded-for")
    if not raw:
        return peer
    header = raw.decode("latin-1") if isinstance(raw, bytes) else raw
    hops = [h.strip() for h in header.split(",") if h.strip()]
    for hop in reversed(hops):
        if not in_networks(hop, config.trusted_proxies):
            address = parse_address(hop)
            return peer if address is None else str(address)
    return hops[0] if hops else peer


def in_networks(ip: str, networks) -> bool:
    """Whether ``ip`` (any spelling ``core/clients.py`` reads) is in one of ``networks``; False for
    anything that is not an IP address."""
    address = parse_address(ip)
    if address is None:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # a dual-stack socket's spelling of an IPv4 peer
    return any(address in net for net in networks)


class TokenRequestLimit:
    """Token requests per client address (``token_rate`` a minute, both protocols together)."""

    def __init__(self, limiter: RateLimiter | SharedRateLimiter, hash_ip):
        self.limiter = limiter
        self.hash_ip = hash_ip

    async def check(self, ip: str, body: dict[str, Any]) -> None:
        """Count a token request of ``ip``; over the limit, a 429 with ``body`` and
        ``Retry-After`` (``{retry}`` in the body's message becomes the seconds to wait)."""
        wait = self.limiter.check(ip)
        if not isinstance(wait, (int, float)):
            wait = await wait
        if wait > 0:
            seconds = retry_after(wait)
            body = {k: v.replace("{retry}", str(seconds)) if isinstance(v, str) else v for k, v in body.items()}
            log.info("token requests over the rate limit from a client ({ip_hash})", ip_hash=self.hash_ip(ip))
            raise ApiError(429, body, {b"Retry-After": str(seconds).encode()})
