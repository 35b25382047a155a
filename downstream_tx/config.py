"""One typed configuration object for the daemon and the admin command.

Sources, in increasing precedence: built-in defaults < TOML file (``--config``) <
``DOWNSTREAM_*`` environment variables < command-line options. Every key below is all
four at once: ``key_name`` in TOML, ``DOWNSTREAM_KEY_NAME`` in the environment and
``--key-name`` on the command line.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from downstream_tx.db.url import InvalidDbUrl, mask_db_url, parse_db_url, with_password


class ConfigError(ValueError):
    """An invalid setting; the message names the setting and the reason."""


# ---------------------------------------------------------------------------------------------
# value parsers: each takes a str (env, command line) or a TOML value and returns the typed value


def _int(minimum: int | None = None, maximum: int | None = None) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, bool):
            raise ValueError("expected an integer")
        if isinstance(value, str):
            text = value.strip().replace("_", "")
            factor = 1
            for suffix, size in (("KiB", 1 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30)):
                if text.endswith(suffix):
                    text, factor = text[: -len(suffix)].strip(), size
                    break
            if not re.fullmatch(r"[+-]?[0-9]+", text):
                raise ValueError("expected a whole number (sizes may end in KiB, MiB or GiB)")
            value = int(text) * factor
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int):
            raise ValueError("expected an integer")
        number = int(value)
        if minimum is not None and number < minimum:
            raise ValueError(f"must be at least {minimum}")
        if maximum is not None and number > maximum:
            raise ValueError(f"must be at most {maximum}")
        return number

    return parse


def _float(minimum: float = 0.0, maximum: float | None = None, exclusive_min: bool = True) -> Callable[[Any], float]:
    def parse(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError("expected a number")
        try:
            number = float(value)
        except ValueError:
            raise ValueError("expected a number") from None
        if number != number or number in (float("inf"), float("-inf")):
            raise ValueError("expected a finite number")
        if number < minimum or (exclusive_min and number == minimum):
            raise ValueError(f"must be greater than {minimum:g}" if exclusive_min else f"must be at least {minimum:g}")
        if maximum is not None and number > maximum:
            raise ValueError(f"must be at most {maximum:g}")
        return number

    return parse


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("expected true or false")


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("expected a string")
    return value


def _optional_str(value: Any) -> str | None:
    value = _str(value).strip()
    return value or None


def _choice(*choices: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = _str(value).strip().lower()
        if text not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return text

    return parse


def _networks(value: Any) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    items = value if isinstance(value, list) else [v for v in _str(value).replace(",", " ").split()]
    try:
        return tuple(ipaddress.ip_network(str(item).strip(), strict=False) for item in items)
    except ValueError as e:
        raise ValueError(f"not an IP address or network: {e}") from None


def _pool(value: Any) -> tuple[tuple[int, int], ...]:
    """``SIZE:COUNT,SIZE:COUNT`` (sizes in bytes, KiB/MiB suffixes allowed)."""
    if isinstance(value, list):
        items = [f"{a}:{b}" for a, b in value]
    else:
        items = [i for i in _str(value).replace(" ", "").split(",") if i]
    parsed = []
    for item in items:
        size, sep, count = item.partition(":")
        if not sep:
            raise ValueError(f"{item!r} is not SIZE:COUNT")
        parsed.append((_int(1, 1 << 40)(size), _int(0, 10_000)(count)))
    return tuple(sorted(parsed))


#: endpoint types whose first positional argument (or ``port=``) is a TCP port number
_PORT_ENDPOINTS = ("tcp", "tcp6", "ssl", "tls")


def endpoint_parts(text: str) -> tuple[str, list[str], dict[str, str]]:
    """``kind``, positional and keyword arguments of a Twisted endpoint string (``\\:`` escapes)."""
    kind, *args = [a.replace("\\:", ":") for a in re.split(r"(?<!\\):", text)]
    positional = [a for a in args if "=" not in a]
    keywords = dict(a.split("=", 1) for a in args if "=" in a)
    return kind, positional, keywords


def _endpoint(value: Any) -> str:
    """A Twisted server endpoint string; the common kinds are checked here, so a typo is a
    configuration error (exit 2) rather than a failure after the database was opened."""
    text = _str(value).strip()
    if not text:
        raise ValueError("expected an endpoint string such as tcp:5000:interface=127.0.0.1")
    kind, positional, keywords = endpoint_parts(text)
    if kind in _PORT_ENDPOINTS:
        port = keywords.get("port", positional[0] if positional else None)
        if port is None or not port.isdigit() or int(port) > 65535:
            raise ValueError(f"the port of a {kind}: endpoint must be a number from 0 to 65535 "
                             f"(e.g. {kind}:5000:interface=127.0.0.1)")
        if kind in ("ssl", "tls") and "privateKey" not in keywords:
            raise ValueError(f"a {kind}: endpoint needs privateKey=FILE (and certKey=FILE)")
    elif kind == "systemd":
        if "domain" not in keywords:
            raise ValueError("a systemd: endpoint needs domain=INET or domain=INET6 (e.g. systemd:domain=INET:index=0)")
        if ("index" in keywords) == ("name" in keywords):
            raise ValueError("a systemd: endpoint needs exactly one of index=N or name=NAME")
        if "index" in keywords and not keywords["index"].isdigit():
            raise ValueError("the index of a systemd: endpoint must be a number")
    elif kind == "unix":
        if not (positional or keywords.get("address")):
            raise ValueError("a unix: endpoint needs a path (unix:/run/downstream/api.sock)")
    return text


def _optional_endpoint(value: Any) -> str | None:
    return _endpoint(value) if _optional_str(value) is not None else None


def _public_url(value: Any) -> str | None:
    """``http(s)://host[:port][/path]``: download URLs handed to farmers start with it."""
    text = _optional_str(value)
    if text is None:
        return None
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("must be an http:// or https:// URL with a host, e.g. http://node.example:5000")
    try:
        parts.port  # noqa: B018 - raises for a port that is not a number
    except ValueError:
        raise ValueError("the port is not a number") from None
    if not (parts.hostname or "").rstrip(".") or parts.query or parts.fragment or "@" in parts.netloc:
        raise ValueError("must be scheme://host[:port][/path], without user, query or fragment")
    return text


def _db_url(value: Any) -> str | None:
    text = _optional_str(value)
    if text is not None:
        parse_db_url(text)
    return text


@dataclass(frozen=True)
class Setting:
    name: str
    parse: Callable[[Any], Any]
    default: Any
    help: str
    secret: bool = False

    @property
    def env(self) -> str:
        return "DOWNSTREAM_" + self.name.upper()

    @property
    def option(self) -> str:
        return self.name.replace("_", "-")


GiB = 1 << 30

SETTINGS: tuple[Setting, ...] = (
    # where things live
    Setting("data_dir", _str, "./downstream-data", "Directory for the SQLite database, chunk store and key files."),
    Setting("db", _db_url, None,
            "Database URL: sqlite:///path/file.db or mysql://user:password@host:port/dbname "
            "(a Galera cluster: mysql://user:password@host1:port,host2:port,host3:port/dbname) "
            "(default sqlite:///<data dir>/downstream.db).", secret=True),
    Setting("db_password_file", _optional_str, None,
            "File holding the MySQL password (first line), so it stays out of the URL, the command line and "
            "the environment; the db URL then has no password."),
    Setting("chunk_dir", _optional_str, None, "Directory of stored chunks (default <data dir>/chunks)."),
    Setting("db_pool_size", _int(1, 100), 5, "Maximum MySQL connections in the pool (SQLite always uses one)."),
    Setting("db_retries", _int(0, 20), 3, "Retries of a transaction after a lost connection or deadlock."),
    # network
    Setting("listen", _endpoint, "tcp:5000:interface=127.0.0.1", "Twisted endpoint string for the API listener."),
    Setting("public_url", _public_url, None,
            "Base URL farmers use to reach this node, for download URLs (default: from --listen)."),
    Setting("metrics_listen", _optional_endpoint, None, "Endpoint string for the Prometheus /metrics listener (off)."),
    Setting("max_body_size", _int(1024, 64 << 20), 1 << 20, "Largest request body accepted, in bytes."),
    Setting("max_batch_body_size", _int(1024, 256 << 20), 16 << 20,
            "Largest body of a v1 /challenge or /answer batch, in bytes (the node reads up to 5,000 items: "
            "a proof is about 1 KiB)."),
    Setting("max_inflate_ratio", _int(1, 1000), 16,
            "A gzip request body may inflate to at most this many times its size (and at least to 64 KiB, "
            "and never past its route's body cap); past that it is refused with 413."),
    Setting("request_timeout", _float(0.0), 30.0,
            "Seconds a client has to send a whole request (head and body) from its first byte; slower "
            "clients get 408 and are disconnected."),
    Setting("idle_timeout", _float(0.0), 60.0,
            "Seconds an idle keep-alive connection is kept open, and a client that reads nothing of its "
            "answers is kept connected."),
    Setting("max_pipelined", _int(1, 10_000), 32,
            "Requests a client may send on one connection ahead of their answers (HTTP pipelining); the "
            "next is answered 429 and the connection closed."),
    Setting("max_connections_per_client", _int(0, 1_000_000), 64,
            "Open connections one client (IP address, IPv6 /64) may hold; more are closed at accept "
            "(0 = no limit; trusted_proxies are not limited)."),
    Setting("trusted_proxies", _networks, (),
            "Peers (IPs or networks, comma separated) whose X-Forwarded-For header is trusted."),
    # tokens and addresses
    Setting("max_tokens_per_address", _int(0), 20, "Tokens one address may hold at once (0 = no limit)."),
    Setting("max_tokens_per_ip", _int(0), 5, "Tokens created from one client IP (0 = no limit)."),
    Setting("token_rate", _int(0), 30, "Token requests per client IP per minute (0 = no limit)."),
    Setting("whitelist", _bool, False, "Only whitelisted addresses may get tokens."),
    Setting("min_balance", _int(0), 10000, "Minimum whitelist balance when the whitelist is on."),
    Setting("require_signature", _bool, False, "v1 /new requires a posted bitcoin signed message."),
    Setting("signature_names_node", _bool, True,
            "With require_signature: the signed message must name this node's public_url (which must be set), "
            "so a signature made for another node or seen elsewhere cannot get tokens here."),
    # stored files and v0 challenges
    Setting("max_file_size", _int(1, 1 << 40), 1 * GiB, "Largest file `downstream-admin file add` accepts."),
    Setting("tick", _float(0.0), 1.0, "Seconds between timer passes."),
    Setting("max_failures", _int(1, 1000), 3, "Consecutive misses/fails that fail a contract."),
    Setting("challenge_batch", _int(1, 100_000), 100, "Hash challenges generated per batch."),
    Setting("challenge_low_water", _int(0, 100_000), 20, "Top up a file when fewer unused challenges remain."),
    # v1 seeded chunks
    Setting("seeded_interval", _int(1, 86400 * 30), 300, "Seconds between v1 challenge due times."),
    Setting("seeded_challenges", _int(1, 1 << 16), 256, "Challenges encoded per seeded chunk."),
    Setting("seeded_check_fraction", _float(0.0, 1.0), 0.01, "Fraction of a seeded chunk each v1 challenge reads."),
    Setting("seeded_pool", _pool, ((1 << 20, 4), (8 << 20, 4), (32 << 20, 2)),
            "Seeded chunks kept ready per size class, as SIZE:COUNT,SIZE:COUNT."),
    Setting("max_chunks_per_request", _int(0, 1000), 10, "v1 chunks handed out per /chunk request (0 = no limit)."),
    Setting("max_size_per_address", _int(0), 1 * GiB, "Bytes of active v1 contracts one address may hold."),
    Setting("contract_retention", _int(0), 7 * 86400,
            "Seconds a finished contract is kept in the contracts table before it is archived (its results "
            "are added to its farmer's totals and the row is deleted); 0 keeps every contract."),
    Setting("archive_batch", _int(1, 100_000), 500,
            "Finished contracts archived per transaction (the archive job runs batches until none is left, "
            "at most archive_batches per pass)."),
    Setting("archive_batches", _int(1, 100_000), 4, "Most archive batches one pass of the archive job runs."),
    Setting("archive_interval", _float(0.0), 5.0, "Seconds between passes of the archive job."),
    Setting("prune_interval", _float(0.0, exclusive_min=False), 10.0,
            "Seconds between passes of the challenge prune, which deletes the used v0 challenges no contract "
            "points at any more (0 = never: they are kept)."),
    Setting("prune_batch", _int(1, 100_000), 1000,
            "Used v0 challenges the challenge prune reads per transaction (it deletes those no contract points "
            "at, keeps the others; a transaction looks at 500 files at most)."),
    Setting("prune_batches", _int(1, 100_000), 50,
            "Most transactions one pass of the challenge prune runs (a pass that reaches the last file stops "
            "there; the next pass goes on where the last one stopped)."),
    Setting("late_grace", _float(0.0, 3600.0, exclusive_min=False), 5.0,
            "Seconds after a challenge's deadline (v0) or a contract's expiration (v1) in which an answer "
            "that arrived at the node still counts (v0: as a late pass); measured from when the request "
            "arrived, not when it was processed."),
    # v0 downloads (docs/protocol-v0.md "Downloads")
    Setting("download_window", _float(0.0, 30 * 86400.0), 3600.0,
            "Seconds after a v0 contract's first download in which its URL still serves resumes and other "
            "ranges (until the contract's first pass); then the download is refused."),
    Setting("redownload", _bool, False,
            "Trusted networks only: a v0 contract's URL keeps serving after its window (still counted); v0 "
            "answers then no longer show that a farmer kept the bytes."),
    # farmer reputation (docs/operations.md "Reputation")
    Setting("dq_threshold", _float(0.0, 1.0, exclusive_min=False), 0.96,
            "A farmer (payout address) whose audit score falls below this is disqualified: its contracts end "
            "and their files go to other farmers (0 = never)."),
    Setting("containment_retries", _int(0, 100), 3,
            "Times a farmer that missed a challenge's deadline is asked the same challenge again before the "
            "miss counts; while asked again it gets no new contracts (0 = no containment)."),
    Setting("suspension_threshold", _float(0.0, 1.0, exclusive_min=False), 0.6,
            "A farmer whose unknown-error score (malformed requests, errors on its side) falls below this is "
            "suspended: no new contracts (0 = never)."),
    Setting("suspension_grace", _int(0), 7 * 86400,
            "Seconds a suspended farmer has to recover before it is disqualified."),
    Setting("vetting_audits", _int(0), 100,
            "Passed challenges after which a farmer is vetted (0 = every farmer is)."),
    Setting("vetting_share", _float(0.0, 1.0, exclusive_min=False), 0.05,
            "Largest share of the recent assignments (see vetting_window) that goes to farmers not vetted yet; "
            "assignments made while no farmer is vetted are not counted."),
    Setting("vetting_window", _float(2.0, exclusive_min=False), 1000.0,
            "Assignments the vetting share is taken over: its counters forget 1/vetting_window of their value "
            "at each new assignment."),
    Setting("vetting_min_age", _int(0), 0,
            "Seconds a farmer's first token must have existed before it can be vetted (0 = no minimum)."),
    Setting("unknown_lambda", _float(0.0, 1.0), 0.98,
            "Forgetting factor of the unknown-error score (malformed requests, errors on the farmer's side): "
            "at 0.98 a farmer that only sends malformed answers is suspended after about 26 of them in a row."),
    Setting("online_window", _float(1.0, exclusive_min=False), 3600.0,
            "Seconds per online window: a window in which a farmer made no request counts once against its "
            "online score, one in which it made any counts for it."),
    Setting("online_lambda", _float(0.0, 1.0), 0.97,
            "Forgetting factor of the online score per online window."),
    Setting("offline_threshold", _float(0.0, 1.0, exclusive_min=False), 0.5,
            "A farmer whose online score falls below this and that made no request for offline_grace seconds "
            "is suspended for being offline (no new contracts) until the score is back (0 = never); being "
            "offline never disqualifies."),
    Setting("offline_grace", _int(0), 4 * 3600,
            "Seconds a farmer must have made no request before it can be suspended for being offline."),
    Setting("last_seen_every", _float(0.0, exclusive_min=False), 60.0,
            "Least seconds between two writes of a token's last request time (last_seen); a farmer's missed "
            "challenge counts as offline only when it made no request in its window, give or take this."),
    Setting("distinct_networks", _bool, True,
            "Put a file's replicas on distinct networks (network_prefix_v4 / network_prefix_v6 of the farmer's "
            "address) as well as distinct payout addresses; off for single-network setups."),
    Setting("network_prefix_v4", _int(1, 32), 24, "Prefix length of an IPv4 farmer's network (distinct_networks)."),
    Setting("network_prefix_v6", _int(1, 128), 48, "Prefix length of an IPv6 farmer's network (distinct_networks)."),
    # operations
    # scale-out (docs/operations.md, "Running several processes")
    Setting("workers", _int(1, 64), 1,
            "Node processes serving the one listening socket (each serves every route; MySQL/MariaDB only "
            "when more than 1)."),
    Setting("lease_ttl", _float(0.1, 3600.0), 15.0,
            "Seconds the instance running the periodic jobs holds its lease without renewing it; another "
            "instance takes over within lease_ttl + one tick after it dies."),
    Setting("instance_name", _optional_str, None,
            "This process's name in the jobs lease, /health, /metrics and logs (default host:pid; a random "
            "part is added in the lease)."),
    Setting("log_format", _choice("text", "json"), "text", "Log lines as readable text or JSON lines."),
    Setting("log_file", _optional_str, None, "Log file (default: standard output); SIGHUP reopens it."),
    Setting("db_unhealthy_after", _float(0.0), 30.0,
            "Seconds the database may be unreachable before the watchdog stops pinging systemd."),
    Setting("shutdown_timeout", _float(0.0), 10.0, "Seconds a stop waits for in-flight work."),
    Setting("health_timeout", _float(0.0), 2.0, "Seconds GET /health waits for the database before answering 503."),
    Setting("stats_interval", _float(0.0), 15.0,
            "Seconds between refreshes of the database gauges in /metrics and the overdue-work check."),
    # dashboard and GeoIP
    Setting("dashboard", _bool, True, "Serve the status dashboard pages (/dashboard, /farmers/<farmer id>)."),
    Setting("history_retention", _int(86400), 31 * 86400,
            "Seconds the dashboard's per-hour challenge results are kept (its charts show 30 days)."),
    Setting("geoip", _bool, True,
            "Look up the country of farmers' IP addresses (status API location, dashboard) offline."),
    Setting("geoip_db", _optional_str, None,
            "A MaxMind .mmdb file (GeoLite2-City or -Country) for GeoIP (default: the country data "
            "shipped with geoip2fast)."),
)

SETTINGS_BY_NAME = {s.name: s for s in SETTINGS}


#: where a value came from, as shown by ``downstream-admin config``
DEFAULT, FILE, ENV, FLAG = "default", "file", "env", "flag"


#: an IP network of ``trusted_proxies``
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Config:
    """The effective configuration, parsed once (:func:`load_config`): one typed field per setting
    (:data:`SETTINGS` gives each its parser, default and help), and where each value came from."""

    data_dir: str
    db: str | None
    db_password_file: str | None
    chunk_dir: str | None
    db_pool_size: int
    db_retries: int
    listen: str
    public_url: str | None
    metrics_listen: str | None
    max_body_size: int
    max_batch_body_size: int
    max_inflate_ratio: int
    request_timeout: float
    idle_timeout: float
    max_pipelined: int
    max_connections_per_client: int
    trusted_proxies: tuple[Network, ...]
    max_tokens_per_address: int
    max_tokens_per_ip: int
    token_rate: int
    whitelist: bool
    min_balance: int
    require_signature: bool
    signature_names_node: bool
    max_file_size: int
    tick: float
    max_failures: int
    challenge_batch: int
    challenge_low_water: int
    seeded_interval: int
    seeded_challenges: int
    seeded_check_fraction: float
    seeded_pool: tuple[tuple[int, int], ...]
    max_chunks_per_request: int
    max_size_per_address: int
    contract_retention: int
    archive_batch: int
    archive_batches: int
    archive_interval: float
    prune_interval: float
    prune_batch: int
    prune_batches: int
    late_grace: float
    download_window: float
    redownload: bool
    dq_threshold: float
    containment_retries: int
    suspension_threshold: float
    suspension_grace: int
    vetting_audits: int
    vetting_share: float
    vetting_window: float
    vetting_min_age: int
    unknown_lambda: float
    online_window: float
    online_lambda: float
    offline_threshold: float
    offline_grace: int
    last_seen_every: float
    distinct_networks: bool
    network_prefix_v4: int
    network_prefix_v6: int
    workers: int
    lease_ttl: float
    instance_name: str | None
    log_format: str
    log_file: str | None
    db_unhealthy_after: float
    shutdown_timeout: float
    health_timeout: float
    stats_interval: float
    dashboard: bool
    history_retention: int
    geoip: bool
    geoip_db: str | None
    sources: Mapping[str, str] = field(default_factory=dict)
    #: the password read from ``db_password_file`` (never shown)
    db_password: str | None = field(default=None, repr=False)
    #: the TOML file read (``--config`` or ``DOWNSTREAM_CONFIG``), if any
    config_file: str | None = None

    @property
    def values(self) -> dict[str, Any]:
        """Every setting's value by name."""
        return {s.name: getattr(self, s.name) for s in SETTINGS}

    @property
    def db_url(self) -> str:
        url = self.db or "sqlite:///" + os.path.join(self.data_dir, "downstream.db")
        if self.db_password is not None:
            url = with_password(url, self.db_password)
        return url

    @property
    def chunk_path(self) -> str:
        return self.chunk_dir or os.path.join(self.data_dir, "chunks")

    @property
    def base_url(self) -> str:
        return (self.public_url or public_url_from_endpoint(self.listen)).rstrip("/")

    def replace(self, **changes: Any) -> Config:
        """The configuration with some settings changed (their source: ``derived at start``)."""
        unknown = set(changes) - set(SETTINGS_BY_NAME)
        if unknown:
            raise TypeError(f"not settings: {', '.join(sorted(unknown))}")
        sources = {**self.sources, **{name: "derived at start" for name in changes}}
        return dataclasses.replace(self, sources=sources, **changes)

    def source_of(self, name: str) -> str:
        return self.sources.get(name, DEFAULT)

    @property
    def location_given(self) -> bool:
        """Whether the database's place was named (``db`` or ``data_dir`` set by a file, the
        environment or an option), rather than the default ``./downstream-data`` under whatever
        directory the command runs in."""
        return self.source_of("db") != DEFAULT or self.source_of("data_dir") != DEFAULT

    def describe(self) -> list[tuple[str, str]]:
        """(name, value) pairs for display, secrets masked."""
        return [(name, value) for name, value, _ in self.describe_sources()]

    def describe_sources(self) -> list[tuple[str, str, str]]:
        """(name, value, source) for display: secrets masked, derived defaults resolved (``chunk_dir``
        shows the directory it defaults to, with the source ``default (<data_dir>/chunks)``)."""
        rows = []
        for s in SETTINGS:
            value = getattr(self, s.name)
            source = self.source_of(s.name)
            if s.name == "db":
                value = mask_db_url(self.db_url)
                if self.db is None:
                    source += " (<data_dir>/downstream.db)"
            elif s.name == "chunk_dir" and value is None:
                value, source = self.chunk_path, source + " (<data_dir>/chunks)"
            elif s.name == "public_url" and value is None:
                value, source = self.base_url, source + " (from listen; a daemon shows its bound address)"
            elif isinstance(value, tuple):
                value = ",".join(
                    f"{a}:{b}" if isinstance(a, int) else str(a) for a, b in value
                ) if value and isinstance(value[0], tuple) else ",".join(str(v) for v in value)
            elif isinstance(value, bool):
                value = str(value).lower()
            rows.append((s.name, "" if value is None else str(value), source))
        return rows


def overdue_grace(config: Config) -> float:
    """How long past its deadline a contract may wait for the contract timer before it counts as
    overdue (metrics, the stats job's warning, the dashboard): five timer ticks, at least 10 s, and
    more than ``late_grace`` (v1 contracts are expired only once that has passed)."""
    return max(5 * config.tick, 10.0, config.late_grace + 5 * config.tick)


def load_config(
    path: str | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Merge defaults < TOML file < environment < ``overrides`` (command line) into a Config."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {s.name: s.default for s in SETTINGS}
    sources: dict[str, str] = {}
    if path is None:
        path = environ.get("DOWNSTREAM_CONFIG") or None
    if path:
        for key, raw in _read_toml(path).items():
            setting = SETTINGS_BY_NAME[key]
            values[key] = _apply(setting, raw, f"{key} in {path}")
            sources[key] = f"{FILE} {path}"
    for setting in SETTINGS:
        if setting.env in environ:
            values[setting.name] = _apply(setting, environ[setting.env], setting.env)
            sources[setting.name] = f"{ENV} {setting.env}"
    for name, raw in (overrides or {}).items():
        if raw is None:
            continue
        setting = SETTINGS_BY_NAME[name.replace("-", "_")]
        values[setting.name] = _apply(setting, raw, "--" + setting.option)
        sources[setting.name] = f"{FLAG} --{setting.option}"
    config = Config(**values, sources=sources, db_password=_read_password(values, sources), config_file=path or None)
    _check_together(config)
    return config


#: the optional table a configuration file may keep its settings in
TABLE = "downstream"


def _read_toml(path: str) -> dict[str, Any]:
    """The settings of a TOML file. One rule for every key: it is a setting's name exactly as
    documented (``public_url``, with underscores), either at the top level or inside a
    ``[downstream]`` table (both may be used in one file, but not for the same key). Anything else
    — a dashed key, an unknown key, another table — is an error naming the key."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"config: cannot read {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config: {path} is not valid TOML: {e}") from None
    table = data.pop(TABLE, {})
    if not isinstance(table, dict):
        raise ConfigError(f"config: {path}: {TABLE!r} must be a table ([{TABLE}]) holding settings")
    merged: dict[str, Any] = {}
    for where, items in (("", data), (f"[{TABLE}] ", table)):
        for key, raw in items.items():
            if key not in SETTINGS_BY_NAME:
                raise ConfigError(f"config: {path}: unknown setting {where}{key!r}{_did_you_mean(key)}")
            if key in merged:
                raise ConfigError(f"config: {path}: {key!r} is set both at the top level and in [{TABLE}]")
            merged[key] = raw
    return merged


def _did_you_mean(key: str) -> str:
    name = key.strip().lower().replace("-", "_")
    if name in SETTINGS_BY_NAME:
        return f" (settings are spelt with underscores: {name})"
    return ""


def _read_password(values: Mapping[str, Any], sources: Mapping[str, str]) -> str | None:
    path = values.get("db_password_file")
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            first = f.readline()
    except OSError as e:
        raise ConfigError(f"db_password_file: cannot read {path}: {e.strerror} "
                          f"(from {sources.get('db_password_file', DEFAULT)})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"db_password_file: {path} is not UTF-8 text") from None
    password = first.rstrip("\r\n")
    if not password:
        raise ConfigError(f"db_password_file: the first line of {path} is empty")
    return password


def _apply(setting: Setting, raw: Any, where: str) -> Any:
    try:
        return setting.parse(raw)
    except (ValueError, TypeError) as e:
        reason = str(e) or "invalid value"
        shown = "***" if setting.secret else repr(raw)
        raise ConfigError(f"{setting.name}: {reason} (got {shown} from {where})") from None


def _check_together(config: Config) -> None:
    if config.require_signature and config.signature_names_node and config.public_url is None:
        raise ConfigError("signature_names_node: signed messages must name this node's public_url, which is not "
                          "set: set public_url (the URL farmers reach the node at) or signature_names_node = false")
    if config.challenge_low_water >= config.challenge_batch:
        raise ConfigError(
            f"challenge_low_water: must be smaller than challenge_batch ({config.challenge_batch})"
        )
    if config.db_password is not None:
        url = parse_db_url(config.db) if config.db else None
        if url is None or url.scheme != "mysql":
            raise ConfigError("db_password_file: only a mysql:// database has a password (db is not mysql://)")
        if url.password:
            raise ConfigError("db_password_file: the db URL has a password too; remove one of them")
    try:
        parse_db_url(config.db_url)
    except InvalidDbUrl as e:
        raise ConfigError(f"db: {e}") from None


def public_url_from_endpoint(listen: str) -> str:
    """Best guess at the URL farmers reach a listener on (``tcp:5000:interface=X`` → ``http://X:5000``)."""
    kind, *args = [a.replace("\\:", ":") for a in re.split(r"(?<!\\):", listen)]
    args = [a for a in args if a]
    port = "5000"
    host = "127.0.0.1"
    for a in args:
        if a.startswith("port="):
            port = a[5:]
        elif a.startswith("interface="):
            host = a[10:]
        elif "=" not in a and a.isdigit():
            port = a
    return public_url_for(host, port, tls=kind in ("ssl", "tls"))


def public_url_for(host: str, port: int | str, tls: bool = False) -> str:
    """The URL of a listening address (a wildcard interface is shown as the loopback address)."""
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"{'https' if tls else 'http'}://{host}:{port}"


def settings_markdown() -> str:
    """The table of every setting for docs/operations.md (a test keeps the doc equal to it)."""
    rows = ["| Option | Environment | Default | Meaning |", "|---|---|---|---|"]
    for s in SETTINGS:
        value = s.default
        if isinstance(value, bool):
            value = str(value).lower()
        elif isinstance(value, tuple):
            value = ",".join(f"{v[0]}:{v[1]}" if isinstance(v, tuple) else str(v) for v in value)
        shown = "(unset)" if value is None or value == "" else f"`{value}`"
        rows.append(f"| `--{s.option}` | `{s.env}` | {shown} | {s.help.replace('|', '/')} |")
    return "\n".join(rows) + "\n"
