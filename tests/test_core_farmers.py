"""core.farmers directly, on each engine: ``downstream-admin farmer show`` totals (TokenStore.farmer's
summary) exact, refusals, token deletion."""

from __future__ import annotations

import hashlib

import orjson
import pytest

from downstream_tx.errors import NodeError
from support import ADDRESS, make_address, make_config, make_node, report_of, run
from support.v1 import INTERVAL, prove


def farmer_id(token: str) -> str:
    return hashlib.sha256(bytes.fromhex(token)).hexdigest()[:20]


def test_farmer_show_totals_are_exact(tmp_path, db_url, clock):
    # late_grace 0: expired at the expiration itself (the grace: tests/test_late_answers.py)
    node = make_node(make_config(tmp_path, db_url, seeded_pool="4096:8", seeded_challenges=4,
                                 seeded_interval=INTERVAL, max_tokens_per_ip=0, late_grace=0), clock)
    run(node.pool.refill())
    token = run(node.v1.new_token(ADDRESS, None))["token"]
    other = run(node.v1.new_token(make_address(2), None))["token"]
    a, b, c, d = orjson.loads(orjson.dumps(run(node.v1.chunks(token, None, 4 * 4096))))
    [o] = orjson.loads(orjson.dumps(run(node.v1.chunks(other, None, 4096))))
    report_of(node.v1.answer(other, None, [{"file_hash": o["file_hash"], "proof": prove(o)}]))  # not ours
    report = report_of(node.v1.answer(token, None, [{"file_hash": a["file_hash"], "proof": prove(a)},
                                              {"file_hash": b["file_hash"], "proof": prove(b)},
                                              {"file_hash": c["file_hash"], "proof": prove(a)}]))
    assert [r.get("status", r.get("error")) for r in report] == ["ok", "ok", "Invalid proof"]
    clock.advance(INTERVAL)
    run(node.expiry.expire())  # c (a wrong proof) and d (no answer) missed their deadline: failed
    shown = run(node.farmers.show(farmer_id(token).upper()))
    assert shown["farmer_id"] == farmer_id(token) and shown["address"] == ADDRESS
    assert shown["contracts"] == {"active": 2, "ended": 0, "failed": 2, "passes": 2, "fails": 1, "misses": 2,
                                  "downloads": 0, "redownloads": 0, "downloads_refused": 0}
    assert shown["heartbeats"] == run(node.stores.tokens.get(
        hashlib.sha256(bytes.fromhex(token)).digest())).hbcount
    other_shown = run(node.farmers.show(farmer_id(other)))
    assert other_shown["contracts"] == {"active": 1, "ended": 0, "failed": 0, "passes": 1, "fails": 0, "misses": 0,
                                        "downloads": 0, "redownloads": 0, "downloads_refused": 0}
    node.db.close()


def test_farmer_show_refusals(node):
    for bad, status in (("xyz", "invalid_farmer_id"), ("0" * 20, "no_farmer"), ("g" * 20, "invalid_farmer_id")):
        with pytest.raises(NodeError) as e:
            run(node.farmers.show(bad))
        assert e.value.status == status


def test_delete_token(node):
    token = run(node.v0.create_token(ADDRESS))
    assert run(node.farmers.delete_token(token)) == 0
    for bad, status in ((token, "no_token"), ("nope", "invalid_token")):
        with pytest.raises(NodeError) as e:
            run(node.farmers.delete_token(bad))
        assert e.value.status == status


def test_last_seen_is_the_farmers_last_request_on_both_protocols(tmp_path, db_url, clock):
    """Not the contract's start while a challenge is unanswered: any request of the farmer, v0 or v1
    (recorded at most every last_seen_every seconds)."""
    from downstream_tx.core.tokens import hash_token
    from support import add_test_file

    node = make_node(make_config(tmp_path, db_url, seeded_pool="4096:2", seeded_challenges=4,
                                 seeded_interval=INTERVAL, max_tokens_per_ip=0, last_seen_every=5), clock)
    add_test_file(node, tmp_path, interval=3600)
    run(node.pool.refill())
    v0 = run(node.v0.create_token(ADDRESS))
    run(node.v0.get_chunk(v0))
    v1 = run(node.v1.new_token(make_address(2), None))["token"]
    run(node.v1.chunks(v1, None, 4096))
    clock.advance(600)  # the v0 challenge is outstanding, unanswered; each asks for its challenges
    run(node.v0.due(v0))
    run(node.v1.challenges(v1, None))
    listed = {f.farmer_id: f.last_seen for f in run(node.farmers.page(0, 10))}
    assert listed == {farmer_id(v0): clock.seconds(), farmer_id(v1): clock.seconds()}
    clock.advance(3)  # within last_seen_every: not written again
    run(node.v0.due(v0))
    assert run(node.farmers.summaries([farmer_id(v0)]))[0].last_seen == clock.seconds() - 3
    clock.advance(10)  # a malformed answer is a request of the farmer too
    run(node.stores.reputation.record_errors(hash_token(v0), 1, clock.seconds()))
    assert run(node.farmers.summaries([farmer_id(v0)]))[0].last_seen == clock.seconds()
