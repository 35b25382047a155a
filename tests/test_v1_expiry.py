"""V1Expiry directly, on each engine, with a task.Clock: an expired contract ends ("ended",
"expired") when its last challenge was answered and fails ("failed", "missed", one miss counted)
when it was not; the downtime window is given back once."""

from __future__ import annotations

import orjson

from support import ADDRESS, make_config, make_node, report_of, run
from support.stored import v1_deadline
from support.v1 import INTERVAL, prove


def build(tmp_path, db_url, clock):
    # late_grace 0: these tests pin the expiration itself (the grace: tests/test_late_answers.py)
    config = make_config(tmp_path, db_url, seeded_pool="4096:4", seeded_challenges=4, seeded_interval=INTERVAL,
                         max_tokens_per_ip=0, late_grace=0)
    node = make_node(config, clock)
    run(node.pool.refill())
    return node


def by_id(node) -> dict[int, dict]:
    return {c["id"]: c for c in run(node.stores.contracts.all())}


def test_expired_contracts_end_or_fail_with_their_reason(tmp_path, db_url, clock):
    node = build(tmp_path, db_url, clock)
    seen: list = []
    node.results.observers.append(lambda *a: seen.append(a))
    token = run(node.v1.new_token(ADDRESS, None))["token"]
    a, b = orjson.loads(orjson.dumps(run(node.v1.chunks(token, None, 8192))))
    proofs = [{"file_hash": a["file_hash"], "proof": prove(a)}]
    assert report_of(node.v1.answer(token, None, proofs))[0]["status"] == "ok"
    seen.clear()
    first = run(v1_deadline(node.stores.seeded.db, b["file_hash"]))  # unanswered
    later = run(v1_deadline(node.stores.seeded.db, a["file_hash"]))  # answered: its deadline moved on
    assert later > first
    clock.advance(first - clock.seconds() - 1)
    result = run(node.expiry.expire())
    assert (result.ended, result.failed) == (0, 0) and seen == [("miss", 0, 1)]
    clock.advance(1)
    result = run(node.expiry.expire())
    assert (result.ended, result.failed) == (0, 1) and seen[-1] == ("miss", 1, 1)
    failed = by_id(node)[b["file_hash"]]
    assert (failed["state"], failed["end_reason"], failed["misses"], failed["passes"]) == ("failed", "missed", 1, 0)
    assert by_id(node)[a["file_hash"]]["state"] == "active"
    clock.advance(later - clock.seconds())
    result = run(node.expiry.expire())
    assert (result.ended, result.failed) == (1, 0) and seen[-1] == ("miss", 0, 1)
    ended = by_id(node)[a["file_hash"]]
    assert (ended["state"], ended["end_reason"], ended["misses"], ended["passes"]) == ("ended", "expired", 0, 1)
    # nothing is expired twice
    assert (run(node.expiry.expire()).ended, run(node.expiry.expire()).failed) == (0, 0)
    assert run(node.v1.tags(token)) == []
    node.db.close()


def test_the_downtime_window_is_given_back_once(tmp_path, db_url, clock):
    node = build(tmp_path, db_url, clock)
    token = run(node.v1.new_token(ADDRESS, None))["token"]
    [c] = run(node.v1.chunks(token, None, 4096))
    before = run(v1_deadline(node.stores.seeded.db, c["file_hash"]))
    t = clock.seconds()
    assert run(node.expiry.shift_for_downtime((t, t + 30))) == 1
    assert run(node.expiry.shift_for_downtime((t, t + 30))) == 0
    assert run(v1_deadline(node.stores.seeded.db, c["file_hash"])) == before + 30
    node.db.close()
