"""Secrets: no token, node secret or heartbeat key in any error body, whatever route and whatever
went wrong; secrets compared in constant time. (Tokens at rest: tests/test_crash.py checks the
database after a full farmer session on each engine; log lines: tests/test_logs.py.)"""

from __future__ import annotations

import hashlib
import inspect

import orjson
import pytest
from treq.testing import StubTreq

from downstream_tx.db import contracts, downloads
from downstream_tx.db.database import DatabaseUnavailable
from downstream_tx.domain import verdicts
from downstream_tx.heartbeat import merkle
from support import ADDRESS, add_test_file, make_config, make_node, make_resource, run

V1 = "/api/downstream/v1"


@pytest.fixture
def setup(tmp_path, db_url, clock):
    config = make_config(tmp_path, db_url, seeded_pool="4096:2", seeded_challenges=4, token_rate=0)
    node = make_node(config, clock)
    run(node.pool.refill())
    add_test_file(node, tmp_path)
    treq = StubTreq(make_resource(node, config))
    yield node, treq
    node.db.close()


def call(treq, method: str, path: str, data: bytes | None = None):
    resp = run(treq.request(method, "http://node.test" + path, data=data, allow_redirects=False,
                            headers={"Content-Type": "application/json"}))
    return resp.code, run(resp.content()), resp.headers


def error_paths(token: str, file_hash: str) -> list[tuple[str, str, bytes | None]]:
    """Requests that carry ``token`` and end in an error (4xx/5xx) or an error entry."""
    bad = "0" * 64
    return [
        ("GET", f"/api/downstream/chunk/{token}x", None),
        ("GET", f"/api/downstream/due/{token[:-1]}", None),
        ("GET", f"/api/downstream/challenge/{token}/{file_hash}/{bad}", None),
        ("GET", f"/api/downstream/challenge/{token}/{bad}/{bad}", None),
        ("GET", f"/api/downstream/challenge/{token}/{file_hash}/{token}", None),
        ("GET", f"/api/downstream/remove/{token}/{bad}", None),
        ("POST", f"/api/downstream/remove/{token}/{bad}", None),
        ("HEAD", f"/api/downstream/chunk/{token}", None),
        ("GET", f"/api/download/{token}", None),
        ("GET", f"/api/download/{file_hash}?cap=1.{token}", None),
        ("GET", f"/api/download/{bad}?cap=1.{token}", None),
        ("GET", f"/api/downstream/new/{token}", None),
        ("GET", f"{V1}/chunk/{token}/{token}", None),
        ("GET", f"{V1}/challenge/{token}/{token}", None),
        ("POST", f"{V1}/challenge/{token}", b'{"hashes": ["' + token.encode() + b'", 99]}'),
        ("POST", f"{V1}/answer/{token}", b'{"proofs": [{"file_hash": 99, "proof": "' + token.encode() + b'"}]}'),
        ("POST", f"{V1}/answer/{token}/1", b"{" + token.encode()),
        ("GET", f"{V1}/tags/{token}x", None),
        ("GET", f"{V1}/status/show/{token}", None),
        ("GET", f"/no/such/route/{token}", None),
        ("GET", f"/api/downstream/due/{token}/", None),
        ("GET", f"/health?token={token}", None),
        ("DELETE", f"/api/downstream/due/{token}", None),
    ]


def secrets_of(node, token: str) -> list[bytes]:
    raw = bytes.fromhex(token)
    keys = node.keys
    return [token.encode(), token.upper().encode(), raw.hex().encode(), keys.secret.hex().encode(), keys.secret,
            keys.heartbeat_key().hex().encode(), keys.heartbeat_key(), hashlib.sha256(raw).hexdigest().encode()]


def test_no_secret_in_any_error_body(setup):
    node, treq = setup
    code, body, _ = call(treq, "GET", f"/api/downstream/new/{ADDRESS}")
    token = orjson.loads(body)["token"]
    file_hash = orjson.loads(call(treq, "GET", f"/api/downstream/chunk/{token}")[1])["file_hash"]
    call(treq, "GET", f"{V1}/chunk/{token}/4096")
    for method, path, data in error_paths(token, file_hash):
        code, body, headers = call(treq, method, path, data)
        location = (headers.getRawHeaders("location") or [b""])[0]
        for secret in secrets_of(node, token):
            assert secret not in body, (method, path, code, body[:200])
            if code not in (301, 302, 307, 308):
                assert secret not in (location if isinstance(location, bytes) else location.encode())


def test_no_secret_in_a_500_or_503_body(setup, monkeypatch):
    node, treq = setup
    token = orjson.loads(call(treq, "GET", f"/api/downstream/new/{ADDRESS}")[1])["token"]

    async def boom(*args, **kwargs):
        raise RuntimeError(f"internal detail with {token} and {node.keys.secret.hex()}")

    async def down(*args, **kwargs):
        raise DatabaseUnavailable(f"get_token: {token}")

    for failure, expected in ((boom, 500), (down, 503)):
        monkeypatch.setattr(node.v0, "due", failure)
        code, body, _ = call(treq, "GET", f"/api/downstream/due/{token}")
        assert code == expected
        assert set(orjson.loads(body)) == {"status", "message"}
        for secret in secrets_of(node, token):
            assert secret not in body


def test_secret_comparisons_are_constant_time():
    """The v0 answer, a download's key and the v1 proof/state checks use hmac.compare_digest; tokens are found by
    their SHA-256 (an index lookup on a hash reveals nothing usable about the token)."""
    # the v0 answer is judged by domain/verdicts.py (current and previous challenge), called by answer_txn
    assert "verdicts.judge(" in inspect.getsource(contracts.answer_txn)
    assert "hmac.compare_digest(response" in inspect.getsource(verdicts._matches)
    assert "==" not in inspect.getsource(verdicts._matches)
    # a download capability's key (its SHA-256 against the stored one; db/downloads.py)
    assert "hmac.compare_digest(bytes(stored), key_hash)" in inspect.getsource(downloads.use_txn)
    source = inspect.getsource(merkle)
    assert source.count("hmac.compare_digest") >= 3
    assert "self.key ==" not in source and "key) ==" not in source
    a, b = merkle.Merkle(0.1, b"k" * 32), merkle.Merkle(0.1, b"k" * 32)
    assert a == b and a != merkle.Merkle(0.1, b"j" * 32)
