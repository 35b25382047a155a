"""Tokens: the one token rule, the one lookup, and the one creation path both protocols use.

A token is 16 random bytes, given out once as 32 lowercase hex characters; the database keeps
only ``sha256(token bytes)``. A farmer id is the first 20 hex characters of that hash. Each
protocol words its refusals its own way, in its own order: a :class:`TokenRules` says which.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from twisted.logger import Logger

from downstream_tx import bitcoin, geoip
from downstream_tx.config import Config
from downstream_tx.core.context import Blocking
from downstream_tx.db.tokens import TokenFacts, TokenStore
from downstream_tx.errors import NodeError

log = Logger()

TOKEN_BYTES = 16
#: a token as farmers send it (either case)
TOKEN_RE = re.compile(r"^[0-9a-fA-F]{32}$")
#: a farmer id: 20 lowercase hex characters
FARMER_ID_RE = re.compile(r"^[0-9a-f]{20}$")


def is_token(text: object) -> bool:
    return isinstance(text, str) and TOKEN_RE.match(text) is not None


def hash_token(token: str) -> bytes:
    """SHA-256 of the token's raw bytes: what the database keeps instead of the token. The caller
    has checked :func:`is_token`."""
    return hashlib.sha256(bytes.fromhex(token)).digest()


def farmer_id_of(token_hash: bytes) -> str:
    return token_hash.hex()[:20]


@dataclass(frozen=True, slots=True)
class Token:
    """A token checked once (by the route's converter, or :func:`parse_token`): its text in lower
    case and the SHA-256 the database keys it by, computed once."""

    text: str
    hash: bytes

    @property
    def farmer_id(self) -> str:
        return farmer_id_of(self.hash)


def parse_token(value: Token | str | object) -> Token | None:
    """``value`` as a :class:`Token` (a Token is taken as it is), or None if it is not one."""
    if isinstance(value, Token):
        return value
    if not is_token(value):
        return None
    text = value.lower()  # type: ignore[union-attr]
    return Token(text, hash_token(text))


def ip_limit_message(limit: int) -> str:
    """The refusal for a client address that already holds ``limit`` tokens (both protocols)."""
    return f"IP Disallowed, only {limit} tokens are permitted per IP address"


# --- admission -------------------------------------------------------------------------------------

#: the checks a new token must pass
IP_LIMIT, INVALID_ADDRESS, NOT_WHITELISTED, LOW_BALANCE, ADDRESS_LIMIT = (
    "ip_limit", "invalid_address", "not_whitelisted", "low_balance", "address_limit")


def failed_checks(facts: TokenFacts, config: Config) -> set[str]:
    """The checks ``facts`` fail under ``config`` (empty: the token may be given)."""
    failed = set()
    if config.max_tokens_per_ip and facts.by_ip >= config.max_tokens_per_ip:
        failed.add(IP_LIMIT)
    if not bitcoin.is_valid_address(facts.address):
        failed.add(INVALID_ADDRESS)
    if config.whitelist:
        if facts.balance is None:
            failed.add(NOT_WHITELISTED)
        elif facts.balance < config.min_balance:
            failed.add(LOW_BALANCE)
    if config.max_tokens_per_address and facts.by_address >= config.max_tokens_per_address:
        failed.add(ADDRESS_LIMIT)
    return failed


@dataclass(frozen=True)
class TokenRules:
    """How one protocol refuses a token: the checks in the order it reports them, and the error
    each raises (``refusal[check](facts, config)``)."""

    name: str
    order: tuple[str, ...]
    refusal: Mapping[str, Callable[[TokenFacts, Config], NodeError]]

    def admit(self, facts: TokenFacts, config: Config) -> None:
        failed = failed_checks(facts, config)
        for check in self.order:
            if check in failed:
                raise self.refusal[check](facts, config)


class Tokens:
    """Giving out tokens (both protocols' ``/new``, ``downstream-admin token create``)."""

    def __init__(self, store: TokenStore, config: Config, clock: Any, hash_ip: Callable[[str | None], str | None],
                 locator: geoip.Locator | None, blocking: Blocking):
        self.store = store
        self.config = config
        self.clock = clock
        self.hash_ip = hash_ip
        #: GeoIP (None: the ``geoip`` setting is off): looked up when a token is created or moves to a
        #: new IP, the only moments the IP is known before it is hashed
        self.locator = locator
        self.blocking = blocking

    async def create(self, address: str, ip: str | None, rules: TokenRules, message: str | None = None,
                     signature: str | None = None, location: str | None = None) -> str:
        """A new token for ``address``, if ``rules`` admit it; only its SHA-256 is stored, with the
        GeoIP location of ``ip`` (unless ``location`` is given) and never ``ip`` itself."""
        raw = os.urandom(TOKEN_BYTES)
        token_hash = hashlib.sha256(raw).digest()
        config = self.config
        country = None
        if location is None:
            location, country = geoip.stored_location(await self.locate(ip))
        await self.store.create(
            token_hash, farmer_id_of(token_hash), address, self.hash_ip(ip), self.clock.seconds(),
            lambda facts: rules.admit(facts, config), message, signature, location, country)
        log.info("{protocol} token created for farmer {farmer_id}", protocol=rules.name,
                 farmer_id=farmer_id_of(token_hash))
        return raw.hex()

    async def locate(self, ip: str | None) -> geoip.Location | None:
        """Where ``ip`` is (GeoIP), or None; the first lookup loads the database off the reactor."""
        return await geoip.locate(self.locator, self.blocking, ip)
