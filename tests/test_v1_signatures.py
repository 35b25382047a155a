"""Signed token requests name the node they are for (issue 20, item 6): with ``require_signature``
and ``signature_names_node`` (the default), a signature made for another node cannot get a token
here; with it off, any signed message is accepted, as by the original server. Through HTTP on each
engine, and the URL rule (v1/signatures.py) as a property."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from downstream_tx.v1.signatures import names_node, node_key
from support import run
from support.v1 import SIG_MESSAGE, SIGNATURE, V1, build, sign

NODE = "https://node.example.org"
OTHER = "downstream-tx token for https://other.example.org"


def _tokens(node) -> int:
    return run(node.stores.tokens.count())


@pytest.fixture
def make(tmp_path, db_url, clock):
    made = []

    def factory(**overrides):
        node, api = build(tmp_path, db_url, clock, require_signature=True, max_tokens_per_ip=0, token_rate=0,
                          **overrides)
        made.append(node)
        return node, api

    yield factory
    for node in made:
        node.db.close()


def _new(api, message: str, secret: bytes = b"\x01" * 32):
    address, signature = sign(message, secret)
    return address, api.post(f"{V1}/new/{address}", {"message": message, "signature": signature})


def test_a_signature_made_for_another_node_gets_no_token(make):
    node, api = make(public_url=NODE)
    address, (code, body) = _new(api, OTHER)
    assert (code, body) == (400, {"status": "error", "message": f"The signed message must name this node: {NODE}"})
    assert _tokens(node) == 0
    # the original's test vector names no node either
    assert api.post(f"{V1}/new/19qVgG8C6eXwKMMyvVegsi3xCsKyk3Z3jV", {"message": SIG_MESSAGE, "signature": SIGNATURE}
                    )[1]["message"] == f"The signed message must name this node: {NODE}"


@pytest.mark.parametrize("message", [
    f"downstream-tx token for {NODE}",
    "farming at HTTPS://Node.Example.ORG:443/ from 2026-05-01",
    f"<{NODE}/>.",
    f"nodes: https://other.example.org and {NODE}.",
])
def test_a_signature_naming_this_node_gets_a_token(make, message):
    node, api = make(public_url=NODE)
    address, (code, body) = _new(api, message)
    assert code == 200 and body["type"] == "Merkle", body
    assert _tokens(node) == 1


@pytest.mark.parametrize("message", [
    "token for https://node.example.org.evil.example",
    "token for http://node.example.org",
    "token for https://node.example.org:8443",
    "token for https://farmer@node.example.org",
    "token for https://node.example.org/other",
    "token for https://node.example.org?x=1",
    "token for https://evil.example/https://node.example.org",
    "token for node.example.org",
    "token for xhttps://node.example.org",
    "token for Xhttps://node.example.org",
])
def test_a_lookalike_of_this_node_is_not_this_node(make, message):
    node, api = make(public_url=NODE)
    address, (code, body) = _new(api, message)
    assert code == 400 and body["message"].startswith("The signed message must name this node"), body
    assert _tokens(node) == 0


def test_the_node_is_checked_before_the_signature(make):
    """A message naming this node with a bad signature is a bad signature; one naming no node is
    refused for that without the signature being checked."""
    node, api = make(public_url=NODE)
    address, signature = sign(f"token for {NODE}")
    bad = api.post(f"{V1}/new/{address}", {"message": f"token for {NODE} again", "signature": signature})
    assert bad == (400, {"status": "error", "message": "Signature invalid."})
    junk = api.post(f"{V1}/new/{address}", {"message": "token", "signature": "A" * 88})
    assert junk[1]["message"] == f"The signed message must name this node: {NODE}"


def test_with_signature_names_node_off_any_signed_message_gets_a_token(make):
    node, api = make(signature_names_node=False)
    address, (code, body) = _new(api, OTHER)
    assert code == 200, body
    assert api.post(f"{V1}/new/19qVgG8C6eXwKMMyvVegsi3xCsKyk3Z3jV", {"message": SIG_MESSAGE, "signature": SIGNATURE}
                    )[0] == 200
    # ... and the same signature, replayed, gets another token: signatures do not expire
    address2, signature = sign(OTHER)
    assert address2 == address
    assert api.post(f"{V1}/new/{address}", {"message": OTHER, "signature": signature})[0] == 200
    assert _tokens(node) == 3


# --------------------------------------------------------------------------- the URL rule


def test_what_names_a_node():
    assert node_key("HTTPS://Node.Example.:443/storj/") == ("https", "node.example", 443, "/storj")
    assert node_key("http://[::1]:5000") == ("http", "::1", 5000, "")
    for url in ("https:///storj", "ftp://node.example", "https://user@node.example", "https://:pw@node.example",
                "https://node.example:99999", "https://node.example:x", "https://node.example?q",
                "https://node.example#f", "https://[::1", "node.example", ""):
        assert node_key(url) is None, url

labels = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=8)
hosts = st.lists(labels, min_size=1, max_size=3).map(".".join)
paths = st.lists(st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_~", min_size=1, max_size=6),
                 max_size=2).map(lambda parts: "".join("/" + p for p in parts))
words = st.lists(st.text("abcdefghijklmnopqrstuvwxyz0123456789 .,:/", max_size=12).filter(lambda w: "://" not in w),
                 max_size=4)


@st.composite
def nodes(draw: st.DrawFn) -> tuple[str, str, str, int | None, str]:
    scheme = draw(st.sampled_from(["http", "https"]))
    host = draw(hosts)
    port = draw(st.one_of(st.none(), st.integers(1, 65535)))
    path = draw(paths)
    url = f"{scheme}://{host}{'' if port is None else f':{port}'}{path}"
    return url, scheme, host, port, path


def _respell(draw: st.DrawFn, scheme: str, host: str, port: int | None, path: str) -> str:
    """The same node written another way: case of scheme and host, the default port written out or
    left off, a trailing slash, punctuation around it."""
    default = {"http": 80, "https": 443}[scheme]
    shown_port = default if port is None else port
    port_text = "" if shown_port == default and draw(st.booleans()) else f":{shown_port}"
    flip = draw(st.booleans())
    text = f"{scheme.upper() if flip else scheme}://{host.upper() if draw(st.booleans()) else host}{port_text}"
    text += path + ("/" if draw(st.booleans()) else "")
    before, after = draw(st.sampled_from([("", ""), ("<", ">."), ("(", "),"), ('"', '"'), ("", "!")]))
    return before + text + after


@settings(max_examples=200, deadline=None)
@given(nodes(), words, words, st.data())
def test_a_message_names_a_node_by_any_spelling_of_its_url(node, head, tail, data):
    url, scheme, host, port, path = node
    key = node_key(url)
    assert key is not None
    spelt = _respell(data.draw, scheme, host, port, path)
    assert names_node(" ".join([*head, spelt, *tail]), key), spelt


@settings(max_examples=200, deadline=None)
@given(nodes(), words, st.data())
def test_a_message_naming_another_node_does_not_name_this_one(node, around, data):
    url, scheme, host, port, path = node
    key = node_key(url)
    default = {"http": 80, "https": 443}[scheme]
    port_text = "" if port is None else f":{port}"
    other_scheme = "https" if scheme == "http" else "http"
    other_port = (port or default) % 65535 + 1
    others = [
        f"{other_scheme}://{host}:{port or default}{path}",  # the same port under the other scheme
        f"{scheme}://{host}.evil{port_text}{path}",
        f"{scheme}://evil.{host}{port_text}{path}",
        f"{scheme}://{host}:{other_port}{path}",
        f"{scheme}://{host}{port_text}{path}/more",
        f"{scheme}://{host}{port_text}{path.upper() if path != path.upper() else path + 'X'}",
        f"{scheme}://user@{host}{port_text}{path}",
        f"{scheme}://{host}{port_text}{path}?q",
        f"{scheme}://{host}{port_text}{path}#f",
        f"{scheme}://evil.example/{url}",
        f"{host}{port_text}{path}",
    ]
    other = data.draw(st.sampled_from(others))
    assert not names_node(" ".join([*around, other]), key), other
    # words are whole: a URL glued to other text names nothing
    assert not names_node("x" + url, key) and not names_node(url + "x", key)
