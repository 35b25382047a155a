"""Protocol v1 helpers for the in-process tests: the API through StubTreq, a node built for v1, honest
proofs and answers."""

from __future__ import annotations

import hashlib

import orjson
from treq.testing import StubTreq

from downstream_tx import bitcoin
from downstream_tx.heartbeat import Challenge, Merkle, RandomIO, Tag
from support import ADDRESS, make_config, make_node, make_resource, run

V1 = "/api/downstream/v1"
SIG_MESSAGE = "test message"
SIGNATURE = "HyzVUenXXo4pa+kgm1vS8PNJM83eIXFC5r0q86FGbqFcdla6rcw72/ciXiEPfjli3ENfwWuESHhv6K9esI0dl5I="
TESTNET = "mipcBbFg9gMiCh81Kj8tqqdgoZub1ZJRfn"
INTERVAL = 60
NONEXISTENT = {"status": "error", "message": "Nonexistent token."}


def sign(message: str, secret: bytes = b"\x01" * 32) -> tuple[str, str]:
    """(address, signature) of ``message`` signed with the key ``secret``."""
    return bitcoin.sign_message(secret, message)


class Api:
    def __init__(self, node, config):
        self.node = node
        self.treq = StubTreq(make_resource(node, config))

    def call(self, method: str, path: str, body=None, raw: bytes | None = None, headers=None, forwarded=None):
        headers = dict(headers or {})
        if forwarded:
            headers["X-Forwarded-For"] = forwarded
        data = raw if raw is not None else (None if body is None else orjson.dumps(body))
        if data is not None:
            headers.setdefault("Content-Type", "application/json")
        resp = run(self.treq.request(method, "http://node.test" + path, data=data, headers=headers,
                                     allow_redirects=False))
        content = run(resp.content())
        try:
            parsed = orjson.loads(content)
        except orjson.JSONDecodeError:
            parsed = content
        return resp.code, parsed

    def get(self, path, **kw):
        return self.call("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.call("POST", path, body, **kw)

    def new_token(self, address=ADDRESS, **kw) -> str:
        code, body = self.get(f"{V1}/new/{address}", **kw)
        assert code == 200, body
        return body["token"]


def build(tmp_path, db_url, clock, **overrides):
    values = {"seeded_pool": "16384:4,4096:4", "seeded_challenges": 4, "seeded_interval": INTERVAL,
              "trusted_proxies": "127.0.0.1"}
    values.update(overrides)
    config = make_config(tmp_path, db_url, **values)
    node = make_node(config, clock)
    return node, Api(node, config)


def prove(chunk_or_contract: dict, challenge: dict | None = None) -> dict:
    challenge = challenge or chunk_or_contract["challenge"]
    proof = Merkle(0.01, b"").prove(RandomIO(chunk_or_contract["seed"], chunk_or_contract["size"]),
                                    Challenge.from_dict(challenge), Tag.from_dict(chunk_or_contract["tag"]))
    return proof.to_dict()


def answer(api, token, pairs, headers=None):
    body = {"proofs": [{"file_hash": fh, "proof": p} for fh, p in pairs]}
    return api.post(f"{V1}/answer/{token}", body, headers=headers or {"Content-Encoding": "gzip"})


def farmer_status(api, token) -> dict:
    """The status API's object of the token's farmer (``/status/show/<farmer id>``)."""
    farmer_id = hashlib.sha256(bytes.fromhex(token)).hexdigest()[:20]
    code, body = api.get(f"{V1}/status/show/{farmer_id}")
    assert code == 200, body
    return body


def heartbeats(api, token) -> int:
    return farmer_status(api, token)["heartbeats"]


def chunks(api, token, size=16384):
    code, body = api.get(f"{V1}/chunk/{token}/{size}")
    assert code == 200, body
    return body["chunks"]


def make_seeded_node(tmp_path, db_url, clock, sub: str | None = None, **overrides):
    """A node with a small seeded pool already filled (six 4 KiB chunks, 4 challenges each,
    ``INTERVAL``, no per-IP limit). With ``sub``, a node of its own SQLite database (its own node
    secret) under ``tmp_path / sub``. The caller closes ``node.db``."""
    values = {"seeded_pool": "4096:6", "seeded_challenges": 4, "seeded_interval": INTERVAL, "max_tokens_per_ip": 0}
    values.update(overrides)
    url = "sqlite:///" + str(tmp_path / sub / "node.db") if sub else db_url
    node = make_node(make_config(tmp_path / sub if sub else tmp_path, url, **values), clock)
    run(node.pool.refill())
    return node
