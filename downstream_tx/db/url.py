"""Database URLs: ``sqlite:///path`` (the embedded default) and ``mysql://user:password@host:port/db``."""

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


def parse_db_url(url: str) -> DbUrl:
    """Parse ``sqlite:///path`` (relative; ``sqlite:////abs`` absolute) or ``mysql://…``."""
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///"):]
        if not path:
            raise InvalidDbUrl("sqlite URL needs a file path (sqlite:///path/file.db)")
        return DbUrl("sqlite", path=path)
    if url.startswith(("mysql://", "mysql+pymysql://", "mariadb://")):
        parts = urlsplit(url)
        try:
            port = parts.port or 3306
        except ValueError:
            raise InvalidDbUrl("the port is not a number") from None
        database = parts.path.lstrip("/")
        if not database or "/" in database:
            raise InvalidDbUrl("mysql URL needs a database name (mysql://user:password@host:port/dbname)")
        return DbUrl(
            "mysql",
            user=unquote(parts.username or ""),
            password=unquote(parts.password or ""),
            host=parts.hostname or "127.0.0.1",
            port=port,
            database=database,
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
