"""Database URLs: ``sqlite:///path`` (the embedded default) and ``mysql://user:password@host:port/db``.

A MySQL URL may list several servers, ``mysql://user:password@h1:3306,h2:3306,h3/db``: the nodes of
one MariaDB Galera cluster. Connections go to the first that answers and is ready (see
:meth:`downstream_tx.db.engine.MysqlEngine.open_connection`); ``host``/``port`` are the first.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit


class InvalidDbUrl(ValueError):
    """A database URL this node cannot use; the message says why (without the setting's name:
    the configuration adds ``db:`` once)."""


@dataclass(frozen=True)
class DbUrl:
    scheme: str  # "sqlite" or "mysql"
    path: str = ""  # sqlite file
    user: str = ""
    password: str = ""
    host: str = "127.0.0.1"
    port: int = 3306
    database: str = ""
    #: every server of the URL, in order (one for a plain URL)
    hosts: tuple[tuple[str, int], ...] = ()

    def __post_init__(self) -> None:
        if self.scheme == "mysql" and not self.hosts:
            object.__setattr__(self, "hosts", ((self.host, self.port),))


def _split_hosts(hostlist: str) -> tuple[tuple[str, int], ...]:
    """``h1:p1,h2,[::1]:p3`` → ((host, port), …); a missing port is 3306."""
    hosts = []
    for item in hostlist.split(","):
        item = item.strip()
        if item.startswith("["):
            host, sep, rest = item[1:].partition("]")
            if not sep or (rest and not rest.startswith(":")):
                raise InvalidDbUrl(f"bad server address {item!r} (an IPv6 address is [addr]:port)")
            port_text = rest[1:]
        else:
            host, _, port_text = item.partition(":") if item.count(":") <= 1 else (item, "", "")
        if not host:
            raise InvalidDbUrl("a server in the host list is empty (mysql://user:password@h1:port,h2:port/db)")
        if port_text:
            if not port_text.isdigit() or not 0 < int(port_text) < 65536:
                raise InvalidDbUrl("the port is not a number")
            port = int(port_text)
        else:
            port = 3306
        hosts.append((host.lower(), port))
    if len(set(hosts)) != len(hosts):
        raise InvalidDbUrl("a server appears twice in the host list")
    return tuple(hosts)


def parse_db_url(url: str) -> DbUrl:
    """Parse ``sqlite:///path`` (relative; ``sqlite:////abs`` absolute) or ``mysql://…``."""
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///"):]
        if not path:
            raise InvalidDbUrl("sqlite URL needs a file path (sqlite:///path/file.db)")
        return DbUrl("sqlite", path=path)
    if url.startswith(("mysql://", "mysql+pymysql://", "mariadb://")):
        try:
            parts = urlsplit(url)
        except ValueError:
            raise InvalidDbUrl("bad server address (an IPv6 address is [addr]:port)") from None
        hostlist = parts.netloc.rpartition("@")[2]
        if "," in hostlist:
            hosts = _split_hosts(hostlist)
        else:
            try:
                hosts = ((parts.hostname or "127.0.0.1", parts.port or 3306),)
            except ValueError:
                raise InvalidDbUrl("the port is not a number") from None
        database = parts.path.lstrip("/")
        if not database or "/" in database:
            raise InvalidDbUrl("mysql URL needs a database name (mysql://user:password@host:port/dbname)")
        return DbUrl(
            "mysql",
            user=unquote(parts.username or ""),
            password=unquote(parts.password or ""),
            host=hosts[0][0],
            port=hosts[0][1],
            database=database,
            hosts=hosts,
        )
    raise InvalidDbUrl("must start with sqlite:/// or mysql:// (got an unsupported URL)")


def with_password(url: str, password: str) -> str:
    """``url`` with ``password`` (percent-encoded) as its password (``db_password_file``)."""
    parts = urlsplit(url)
    user = parts.netloc.rpartition("@")[0].split(":", 1)[0]
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{user}:{quote(password, safe='')}@{host}").geturl()


def mask_db_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(":" + parts.password + "@", ":***@", 1)
        return parts._replace(netloc=netloc).geturl()
    return url
