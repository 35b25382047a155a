"""Which node a signed token request names (docs/protocol-v1.md, Signatures).

A bitcoin signed message proves that whoever made it held the address's key, not for which node or
when: a signature seen anywhere else (made for another node, posted in public) would mint tokens here.
With ``signature_names_node`` on, the message must also name this node, by its ``public_url``: some
whitespace-separated word of it, with surrounding punctuation taken off, must be an http(s) URL of
the same node. Two URLs name the same node when their scheme, host and port are the same (scheme
and host in any case, an omitted port being the scheme's default, a trailing dot of the host
ignored) and so are their paths (case-sensitive, trailing slashes ignored). A URL with a user,
password, query or fragment names no node.
"""

from __future__ import annotations

from urllib.parse import urlsplit

__all__ = ["names_node", "node_key"]

DEFAULT_PORTS = {"http": 80, "https": 443}
#: taken off the start and the end of a word before it is read as a URL ("<https://node.example>.")
LEADING, TRAILING = "(<\"'", ")>\"'.,;:!?"

NodeKey = tuple[str, str, int, str]


def node_key(url: str) -> NodeKey | None:
    """(scheme, host, port, path) of an http(s) URL, as two URLs of one node give them alike; None
    for anything that does not name a node."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # a port that is not a number or out of range, a bad IPv6 literal
        return None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").rstrip(".")
    if scheme not in DEFAULT_PORTS or not host or "@" in parts.netloc or parts.query or parts.fragment:
        return None
    return scheme, host, DEFAULT_PORTS[scheme] if port is None else port, parts.path.rstrip("/")


def names_node(message: str, node: NodeKey) -> bool:
    """Does ``message`` name the node whose :func:`node_key` is ``node``?"""
    return any(node_key(word.lstrip(LEADING).rstrip(TRAILING)) == node for word in message.split() if "://" in word)
