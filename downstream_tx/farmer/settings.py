"""The farmer's settings: downstream-farmer 0.1.8's command line, with the same meanings, plus what a
farmer today expects (several nodes, a TOML config, the protocol, JSON logs). Each setting has a
default; a TOML file (``--config``) overrides the defaults and the command line overrides both.
A bad setting is one line on standard error and exit status 2.
"""

from __future__ import annotations

import argparse
import re
import tomllib
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

from downstream_tx import bitcoin
from downstream_tx.version import full_version

from .files import SignedMessage

DEFAULT_SIZE = 33554432  # 32 MiB, as 0.1.8
PROTOCOL_CHOICES = ("auto", "v0", "v1")
_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1 << 10, "m": 1000**2, "mb": 1000**2, "mib": 1 << 20,
          "g": 1000**3, "gb": 1000**3, "gib": 1 << 30, "t": 1000**4, "tb": 1000**4, "tib": 1 << 40}
_SIZE = re.compile(r"^\s*(\d+)\s*([a-zA-Z]*)\s*$")


class SettingsError(ValueError):
    """A setting that cannot be used; the message names it."""


def parse_size(value: Any, name: str = "size") -> int:
    """Bytes from an integer or a text such as ``1048576``, ``500MB``, ``2GiB``."""
    if isinstance(value, bool):
        raise SettingsError(f"{name}: expected a number of bytes, got {value!r}")
    if isinstance(value, int):
        n = value
    else:
        m = _SIZE.match(str(value))
        if not m or m.group(2).lower() not in _UNITS:
            raise SettingsError(f"{name}: expected a number of bytes such as 1048576, 500MB or 2GiB, got {value!r}")
        n = int(m.group(1)) * _UNITS[m.group(2).lower()]
    if n < 1:
        raise SettingsError(f"{name}: must be a positive size to farm")
    return n


def check_url(url: Any) -> str:
    if not isinstance(url, str):
        raise SettingsError(f"node URL: expected text, got {url!r}")
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SettingsError(f"node URL {url!r}: expected http://host[:port] or https://host[:port]")
    return url.strip().rstrip("/")


@dataclass(frozen=True)
class NodeSettings:
    """What the farmer does with one node."""

    url: str
    address: str | None = None
    token: str | None = None
    size: int = DEFAULT_SIZE
    protocol: str = "auto"
    #: a signed message for this node given in the settings (else the identity file's)
    signed: SignedMessage | None = None


@dataclass(frozen=True)
class Settings:
    nodes: tuple[NodeSettings, ...]
    number: int | None = None
    history: str = "data/history.json"
    identity: str = "data/identities.json"
    data_directory: str = "data/chunks"
    forcenew: bool = False
    ssl_no_verify: bool = False
    log_path: str = "farmer.log"
    quiet: bool = False
    print_log: bool = False
    json_log: bool = False
    threads: int = 2
    stop_timeout: float = 10.0
    chunk_retry: float = 30.0
    request_timeout: float = 30.0
    summary_interval: float = 60.0
    min_free: int = 64 << 20
    #: the URLs given on the command line or in the config (empty: the history's last node)
    explicit_nodes: bool = field(default=True, compare=False)


#: settings of the TOML file's top level: name -> (checker, meaning); see docs/farmer.md
def _number(kind: type, low: float, name: str):
    def check(value: Any) -> Any:
        wrong_type = not isinstance(value, int if kind is int else (int, float))
        if isinstance(value, bool) or wrong_type:
            raise SettingsError(f"{name}: expected {'a whole number' if kind is int else 'a number'}, got {value!r}")
        if value < low:
            raise SettingsError(f"{name}: must be at least {low:g}, got {value!r}")
        return kind(value)
    return check


def _of_type(kind: type, expected: str, name: str):
    def check(value: Any) -> Any:
        if not isinstance(value, kind):
            raise SettingsError(f"{name}: expected {expected}, got {value!r}")
        return value
    return check


def _text(name: str):
    return _of_type(str, "text", name)


def _flag(name: str):
    return _of_type(bool, "true or false", name)


def _protocol(value: Any) -> str:
    if value not in PROTOCOL_CHOICES:
        raise SettingsError(f"protocol: expected one of {', '.join(PROTOCOL_CHOICES)}, got {value!r}")
    return value


def _address(value: Any) -> str:
    if not bitcoin.is_valid_address(value):
        raise SettingsError(f"address {value!r} is not a valid SJCX address")
    return value


def _token(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[0-9a-fA-F]{32}", value):
        raise SettingsError("token: expected 32 hexadecimal characters")
    return value.lower()


SCALARS: dict[str, Any] = {
    "number": _number(int, 1, "number"),
    "history": _text("history"),
    "identity": _text("identity"),
    "data_directory": _text("data_directory"),
    "forcenew": _flag("forcenew"),
    "ssl_no_verify": _flag("ssl_no_verify"),
    "log_path": _text("log_path"),
    "quiet": _flag("quiet"),
    "print_log": _flag("print_log"),
    "json_log": _flag("json_log"),
    "threads": _number(int, 1, "threads"),
    "stop_timeout": _number(float, 0, "stop_timeout"),
    "chunk_retry": _number(float, 0.1, "chunk_retry"),
    "request_timeout": _number(float, 0.1, "request_timeout"),
    "summary_interval": _number(float, 0, "summary_interval"),
    "min_free": lambda v: 0 if v in (0, "0") else parse_size(v, "min_free"),
}
#: settings a ``[[node]]`` table may hold (the top level may set the last four for every node)
NODE_KEYS = {"url", "address", "token", "size", "protocol", "message", "signature"}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="downstream-farmer",
        description="Farm against downstream nodes: hold their data and prove it, on time. Command line "
                    "of downstream-farmer 0.1.8 (same options, same files), several nodes at once, both "
                    "protocols. See docs/farmer.md.")
    p.add_argument("-V", "--version", action="version", version=f"downstream-farmer {full_version()}")
    p.add_argument("node_url", nargs="*", help="URL of a downstream node (several may be given). Default: "
                   "the nodes of --config, else the last node in the history file.")
    p.add_argument("-n", "--number", type=int, help="Number of challenges to answer, then stop. Default: "
                   "answer until stopped.")
    p.add_argument("-p", "--history", help="History file: the farming token used on each node (0.1.8 format). "
                   "Default: data/history.json.")
    p.add_argument("-s", "--size", help=f"Total size of contracts to hold per node, in bytes (or 500MB, 2GiB). "
                   f"Default: {DEFAULT_SIZE}.")
    p.add_argument("-a", "--address", help="SJCX address to farm for. Default: the address saved for the node in "
                   "the history file, else the first address of the identity file.")
    p.add_argument("-t", "--token", help="Farming token to use on the node (a new one is obtained otherwise; "
                   "tokens are saved in the history file).")
    p.add_argument("-f", "--forcenew", action="store_true", default=None,
                   help="Get a new token even when the history has one (the contracts held for the old "
                        "token are given up).")
    p.add_argument("-i", "--identity", help="Identity file: per SJCX address a signed message proving "
                   'ownership, {"<address>": {"message": ..., "signature": ...}}, optionally with a '
                   '"nodes" object of such pairs per node URL. Default: data/identities.json.')
    p.add_argument("-d", "--data-directory", dest="data_directory",
                   help="Directory for chunk files and contract state. Default: data/chunks.")
    p.add_argument("--ssl-no-verify", action="store_true", default=None,
                   help="Do not verify the nodes' TLS certificates.")
    p.add_argument("--log-path", help="Log file ('' for none). Default: farmer.log.")
    p.add_argument("--quiet", action="store_true", default=None, help="Do not show the status view.")
    p.add_argument("--print-log", action="store_true", default=None,
                   help="Print the log on standard output instead of the status view.")
    p.add_argument("-c", "--config", help="TOML file of settings (the command line overrides it).")
    p.add_argument("--protocol", choices=PROTOCOL_CHOICES,
                   help="Protocol to farm with: v0, v1, or auto (every one the node speaks; v1 when it does "
                        "not say). Default: auto.")
    p.add_argument("--json-log", action="store_true", default=None, help="Log lines as JSON objects.")
    p.add_argument("--message", help="Signed message to send for a new token (with --signature), instead of "
                   "the identity file's: e.g. one naming the node, for a node that asks for that.")
    p.add_argument("--signature", help="Base64 signature of --message by the farming address's key.")
    p.add_argument("--threads", type=int, help="Worker threads for writing chunks and computing proofs. Default: 2.")
    p.add_argument("--stop-timeout", type=float, dest="stop_timeout",
                   help="Seconds to finish answers under way when stopped (SIGTERM, Ctrl-C). Default: 10.")
    p.add_argument("--chunk-retry", type=float, dest="chunk_retry",
                   help="Seconds to wait before asking again when a node has no chunk to give. Default: 30.")
    p.add_argument("--request-timeout", type=float, dest="request_timeout",
                   help="Seconds a node may take to answer a request. Default: 30.")
    p.add_argument("--summary-interval", type=float, dest="summary_interval",
                   help="Seconds between status lines in the log when there is no status view (0: none). "
                        "Default: 60.")
    p.add_argument("--min-free", dest="min_free",
                   help="Disk space left free in the data directory: no new chunk past it (bytes, or 500MB, "
                        "1GiB; 0: none). Default: 64MiB.")
    return p


def load_toml(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except OSError as e:
        raise SettingsError(f"config {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise SettingsError(f"config {path}: {e}") from None


def _node_from(table: dict[str, Any], file_defaults: dict[str, Any], given: dict[str, Any],
               where: str) -> NodeSettings:
    """A ``[[node]]`` table over the file's top level, under the command line."""
    unknown = set(table) - NODE_KEYS
    if unknown:
        raise SettingsError(f"{where}: unknown setting {sorted(unknown)[0]!r}")
    values = {**file_defaults, **table, **given}
    if "url" not in values:
        raise SettingsError(f"{where}: a node needs a url")
    return node_settings(values)


def node_settings(values: dict[str, Any]) -> NodeSettings:
    message, signature = values.get("message"), values.get("signature")
    if (message is None) != (signature is None):
        raise SettingsError("message and signature go together: give both or neither")
    signed = None
    if message is not None:
        signed = SignedMessage(_text("message")(message), _text("signature")(signature))
    address = values.get("address")
    token = values.get("token")
    return NodeSettings(
        url=check_url(values["url"]),
        address=_address(address) if address is not None else None,
        token=_token(token) if token is not None else None,
        size=parse_size(values["size"]) if values.get("size") is not None else DEFAULT_SIZE,
        protocol=_protocol(values.get("protocol", "auto")),
        signed=signed,
    )


def load_settings(argv: list[str] | None = None) -> Settings:
    """The settings from the command line (and its ``--config``); raises :class:`SettingsError`."""
    args = parser().parse_args(argv)
    toml: dict[str, Any] = load_toml(args.config) if args.config else {}
    where = f"config {args.config}"
    scalars: dict[str, Any] = {}
    file_defaults: dict[str, Any] = {}
    given: dict[str, Any] = {}
    tables: list[dict[str, Any]] = []
    for key, value in toml.items():
        if key == "node":
            if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
                raise SettingsError(f"{where}: nodes are [[node]] tables")
            tables = value
        elif key in SCALARS:
            scalars[key] = SCALARS[key](value)
        elif key in NODE_KEYS - {"url"}:
            file_defaults[key] = value
        else:
            raise SettingsError(f"{where}: unknown setting {key!r}")
    # the command line over the file
    for key in SCALARS:
        value = getattr(args, key, None)
        if value is not None:
            scalars[key] = SCALARS[key](value)
    for key in ("address", "token", "size", "protocol", "message", "signature"):
        value = getattr(args, key)
        if value is not None:
            given[key] = value
    if "message" in given or "signature" in given:  # the pair goes together, from one place
        file_defaults.pop("message", None)
        file_defaults.pop("signature", None)
    urls = list(args.node_url)
    if urls:
        nodes = tuple(node_settings({**file_defaults, **given, "url": url}) for url in urls)
    else:
        nodes = tuple(_node_from(t, file_defaults, given, f"{where}, node {n + 1}") for n, t in enumerate(tables))
    if ("token" in given or "token" in file_defaults) and len(nodes) > 1:
        raise SettingsError("--token names the token of one node: give one node URL with it")
    if len({n.url for n in nodes}) != len(nodes):
        raise SettingsError("a node URL is given twice")
    settings = Settings(nodes=nodes, explicit_nodes=bool(nodes), **scalars)
    if not nodes:
        # the last node of the history file (0.1.8's default) is filled in when the history is read
        settings = replace(settings, nodes=(NodeSettings(url="", **_node_kwargs({**file_defaults, **given})),))
    return settings


def _node_kwargs(values: dict[str, Any]) -> dict[str, Any]:
    probe = node_settings({**values, "url": "http://placeholder"})
    return {"address": probe.address, "token": probe.token, "size": probe.size, "protocol": probe.protocol,
            "signed": probe.signed}
