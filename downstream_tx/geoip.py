"""GeoIP: where a farmer's IP address is, from an offline database, for the status API's ``location``
(docs/protocol-v1.md, "Status API") and the dashboard's count per country.

Two sources: the country database that ships inside the ``geoip2fast`` package (the default), or a
MaxMind ``.mmdb`` file (GeoLite2-City or -Country, ``geoip_db``) read with ``maxminddb``. A lookup
happens when a token is created and when its IP changes — the only moments the node sees the IP,
which it then keeps only hashed. Loopback, private and other non-global addresses are never looked
up. The database is loaded on the first lookup of a global address (in a worker thread: loading the
shipped data takes a fraction of a second and some 50 MB), so a node whose farmers are all local
never loads it.
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from twisted.logger import Logger

from downstream_tx.config import Config

log = Logger()

#: geoip2fast's data file with IPv4 and IPv6 networks (country level)
BUILTIN_DATA = "geoip2fast-ipv6.dat.gz"


@dataclass(frozen=True)
class Location:
    """The 2015 status API's location dict; any value may be None."""

    country: str | None
    state: str | None = None
    city: str | None = None
    zip: str | None = None
    lat: float | None = None
    lon: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"country": self.country, "state": self.state, "city": self.city, "zip": self.zip,
                "lat": self.lat, "lon": self.lon}

    def to_json(self) -> str:
        return orjson.dumps(self.as_dict()).decode()


def location_from_json(text: str | None) -> dict[str, Any] | None:
    """The stored ``tokens.location`` as the API's dict (None when unknown or unreadable)."""
    if not text:
        return None
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def stored_location(location: Location | None) -> tuple[str | None, str | None]:
    """``(tokens.location, tokens.country)`` for a lookup's result."""
    if location is None:
        return None, None
    return location.to_json(), location.country


def plain_ip(ip: str | None) -> str | None:
    """``ip`` as a lookup key: IPv4-mapped IPv6 (a dual-stack listener's ``::ffff:a.b.c.d``) as
    IPv4; None for text that is not an address."""
    try:
        address = ipaddress.ip_address(ip or "")
    except ValueError:
        return None
    mapped = getattr(address, "ipv4_mapped", None)
    return str(mapped or address)


def is_global(ip: str | None) -> bool:
    plain = plain_ip(ip)
    return plain is not None and ipaddress.ip_address(plain).is_global


class Locator:
    """Looks addresses up in one database, loaded on first use."""

    def __init__(self, mmdb_path: str | None = None):
        self.mmdb_path = mmdb_path
        self._lookup: Callable[[str], Location | None] | None = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._lookup is not None

    def load(self) -> None:
        with self._lock:
            if self._lookup is None:
                self._lookup = self._open_mmdb() if self.mmdb_path else self._open_builtin()

    def locate(self, ip: str | None) -> Location | None:
        """Blocking (loads the database on the first global address)."""
        if not is_global(ip):
            return None
        if self._lookup is None:
            self.load()
        assert self._lookup is not None
        try:
            return self._lookup(str(plain_ip(ip)))
        except Exception:
            log.failure("GeoIP lookup failed")
            return None

    def _open_builtin(self) -> Callable[[str], Location | None]:
        from geoip2fast import GeoIP2Fast

        db = GeoIP2Fast(geoip2fast_data_file=BUILTIN_DATA, verbose=False)

        def lookup(ip: str) -> Location | None:
            result = db.lookup(ip)
            code = getattr(result, "country_code", "") or ""
            if len(code) != 2 or code == "--" or getattr(result, "is_private", False):
                return None
            return Location(country=result.country_name or None)

        return lookup

    def _open_mmdb(self) -> Callable[[str], Location | None]:
        import maxminddb

        reader = maxminddb.open_database(self.mmdb_path)

        def name(record: Any) -> str | None:
            if not isinstance(record, dict):
                return None
            names = record.get("names")
            return names.get("en") if isinstance(names, dict) else None

        def lookup(ip: str) -> Location | None:
            record = reader.get(ip)
            if not isinstance(record, dict):
                return None
            subdivisions = record.get("subdivisions") or [None]
            postal = record.get("postal") or {}
            place = record.get("location") or {}
            country = name(record.get("country"))
            if country is None:
                return None
            return Location(country=country, state=name(subdivisions[0]), city=name(record.get("city")),
                            zip=postal.get("code") if isinstance(postal, dict) else None,
                            lat=place.get("latitude") if isinstance(place, dict) else None,
                            lon=place.get("longitude") if isinstance(place, dict) else None)

        return lookup


def locator_from_config(config: Config) -> Locator | None:
    """The node's locator (None when ``geoip`` is off)."""
    return Locator(config.geoip_db) if config.geoip else None


async def locate(locator: Locator | None, blocking: Callable[..., Awaitable[Any]], ip: str | None) -> Location | None:
    """Look ``ip`` up without blocking the reactor on the first load."""
    if locator is None or not is_global(ip):
        return None
    if not locator.loaded:
        return await blocking(locator.locate, ip)
    return locator.locate(ip)
