"""Batch bodies: the published 0.1.8 client puts every ready proof into one ``/answer`` body (about
1 KiB a proof), so a batch of 5,000 proofs — the most the node reads — must pass the site's body
cap and be checked whole. ``max_batch_body_size`` caps the v1 batch routes; every other route
keeps ``max_body_size``. The requests go through the real site over a ``StringTransport``."""

from __future__ import annotations

import orjson
from twisted.internet import address
from twisted.internet.testing import StringTransport

from downstream_tx.wire import MAX_ITEMS
from support import ADDRESS, make_config, make_node, make_server, run
from support.v1 import prove

SIZE = 4096


def post(site, path: str, body: bytes) -> tuple[int, bytes]:
    proto = site.buildProtocol(address.IPv4Address("TCP", "127.0.0.1", 40000))
    transport = StringTransport(peerAddress=address.IPv4Address("TCP", "127.0.0.1", 40000))
    proto.makeConnection(transport)
    proto.dataReceived(b"POST %s HTTP/1.1\r\nHost: node.test\r\nContent-Type: application/json\r\n"
                       b"Content-Length: %d\r\nConnection: close\r\n\r\n" % (path.encode(), len(body)) + body)
    head, _, payload = transport.value().partition(b"\r\n\r\n")
    return int(head[9:12]), payload


def test_a_5000_proof_answer_batch_is_checked_whole(tmp_path, clock):
    config = make_config(tmp_path, None, seeded_pool=f"{SIZE}:{MAX_ITEMS}", seeded_challenges=32,
                         max_chunks_per_request=0, max_tokens_per_ip=0)
    node = make_node(config, clock)
    try:
        run(node.pool.refill())
        token = run(node.v1.new_token(ADDRESS, None))["token"]
        contracts = orjson.loads(orjson.dumps(run(node.v1.chunks(token, None, MAX_ITEMS * SIZE))))
        assert len(contracts) == MAX_ITEMS
        body = orjson.dumps({"proofs": [{"file_hash": c["file_hash"], "proof": prove(c)} for c in contracts]})
        assert len(body) > 2 * config.max_body_size  # what the plain 1 MiB cap refused with 413
        site = make_server(node).site(clock)
        code, payload = post(site, f"/api/downstream/v1/answer/{token}", body)
        assert code == 200, payload[:200]
        report = orjson.loads(payload)["report"]
        assert len(report) == MAX_ITEMS and all(r["status"] == "ok" for r in report)
    finally:
        node.db.close()


def test_the_batch_cap_holds_and_other_routes_keep_the_body_cap(tmp_path, clock):
    config = make_config(tmp_path, None, max_body_size=2048, max_batch_body_size=8192)
    node = make_node(config, clock)
    try:
        site = make_server(node).site(clock)
        token = "ab" * 16
        over_body_cap = orjson.dumps({"proofs": [{"file_hash": 1, "proof": "x" * 4000}]})
        assert post(site, f"/api/downstream/v1/answer/{token}", over_body_cap)[0] == 400  # read: unknown token
        assert post(site, f"/api/downstream/v1/challenge/{token}", over_body_cap)[0] == 400
        code, payload = post(site, f"/api/downstream/v1/new/{ADDRESS}", over_body_cap)
        assert code == 413 and orjson.loads(payload)["status"] == "too_large"
        over_batch_cap = orjson.dumps({"proofs": [{"file_hash": 1, "proof": "x" * 9000}]})
        assert post(site, f"/api/downstream/v1/answer/{token}", over_batch_cap)[0] == 413
    finally:
        node.db.close()
