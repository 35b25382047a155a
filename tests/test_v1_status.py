"""Status API (§4.1/§4.2 with Part A's fixes) and the v1 timers (pool, expiry, uptime), on each
engine, driven by a task.Clock."""

from __future__ import annotations

import hashlib
import re

import pytest

from downstream_tx.jobs.uptime import UptimeSummary
from downstream_tx.runtime import build_jobs, contract_timer
from support import make_address, run
from support.stored import v1_deadline
from support.v1 import INTERVAL, V1, answer, build, chunks, farmer_status, prove

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


@pytest.fixture
def setup(tmp_path, db_url, clock):
    # late_grace 0: these tests pin the expiration itself (the grace: tests/test_late_answers.py)
    node, api = build(tmp_path, db_url, clock, seeded_pool="16384:2,4096:6", max_tokens_per_ip=0, late_grace=0)
    run(node.pool.refill())
    yield node, api
    node.db.close()


def farmer_id(token: str) -> str:
    return hashlib.sha256(bytes.fromhex(token)).hexdigest()[:20]


def three_farmers(api):
    """t1: 16384 + 4096 online, 2 heartbeats; t2: 4096 online, 1 heartbeat; t3: no contracts."""
    t1, t2, t3 = (api.new_token(make_address(i)) for i in (1, 2, 3))
    got = chunks(api, t1, 20480)
    answer(api, t1, [(c["file_hash"], prove(c)) for c in got])
    [c] = chunks(api, t2, 4096)
    answer(api, t2, [(c["file_hash"], prove(c))])
    return t1, t2, t3


def ids(body) -> list[str]:
    return [f["id"] for f in body["farmers"]]


def test_list_fields_and_sorting(setup, clock):
    node, api = setup
    t1, t2, t3 = three_farmers(api)
    clock.advance(5)
    uptime = UptimeSummary(node.stores.status, clock)  # the uptime job's body
    run(uptime())
    code, body = api.get(f"{V1}/status/list/")
    assert code == 200
    by_id = {f["id"]: f for f in body["farmers"]}
    f1 = by_id[farmer_id(t1)]
    assert f1 == {"id": farmer_id(t1), "address": make_address(1), "location": None, "uptime": 100.0,
                  "heartbeats": 2, "contracts": 2, "size": 20480, "online": True, "last_due": f1["last_due"],
                  # added: the standing of the farmer's address (the original's fields are unchanged)
                  "audit_score": 1.0, "online_score": 1.0, "unknown_score": 1.0, "reputation": "ok",
                  "vetted": False, "contained": 0,
                  "audits": {"passes": 2, "fails": 0, "misses": 0, "retries": 0, "errors": 0},
                  "last_seen": f1["last_seen"], "seen_online": True}  # the address's latest request
    assert ISO.match(f1["last_seen"])
    assert ISO.match(f1["last_due"])
    f3 = by_id[farmer_id(t3)]
    assert (f3["contracts"], f3["size"], f3["online"], f3["last_due"], f3["uptime"]) == (0, 0, False, None, 0.0)
    assert ids(body) == sorted(by_id)  # default: by id, ascending

    order = {"heartbeats": [t3, t2, t1], "size": [t3, t2, t1], "contracts": [t3, t2, t1]}
    for key, tokens in order.items():
        assert ids(api.get(f"{V1}/status/list/by/{key}")[1]) == [farmer_id(t) for t in tokens]
        assert ids(api.get(f"{V1}/status/list/by/d/{key}")[1]) == [farmer_id(t) for t in reversed(tokens)]
    assert ids(api.get(f"{V1}/status/list/by/d/online")[1])[-1] == farmer_id(t3)
    assert ids(api.get(f"{V1}/status/list/by/uptime")[1])[0] == farmer_id(t3)
    addresses = [f["address"] for f in api.get(f"{V1}/status/list/by/address")[1]["farmers"]]
    assert addresses == sorted(addresses)
    assert api.get(f"{V1}/status/list/by/bogus") == (400, {"status": "error", "message": "Invalid sort."})


def test_list_limit_page_and_online_before_limit(setup):
    node, api = setup
    t1, t2, t3 = three_farmers(api)
    all_ids = ids(api.get(f"{V1}/status/list/")[1])
    assert ids(api.get(f"{V1}/status/list/2")[1]) == all_ids[:2]
    assert ids(api.get(f"{V1}/status/list/2/1")[1]) == all_ids[2:]
    assert ids(api.get(f"{V1}/status/list/by/heartbeats/1/2")[1]) == [farmer_id(t1)]
    assert ids(api.get(f"{V1}/status/list/by/d/heartbeats/1")[1]) == [farmer_id(t1)]
    assert ids(api.get(f"{V1}/status/list/by/d/heartbeats/1/1")[1]) == [farmer_id(t2)]
    online = sorted([farmer_id(t1), farmer_id(t2)])
    assert ids(api.get(f"{V1}/status/list/online/")[1]) == online
    # the filter applies before LIMIT: /online/by/heartbeats/1 is the least-beating *online* farmer
    assert ids(api.get(f"{V1}/status/list/online/by/heartbeats/1")[1]) == [farmer_id(t2)]
    assert ids(api.get(f"{V1}/status/list/online/2")[1]) == online
    assert ids(api.get(f"{V1}/status/list/online/1/1")[1]) == online[1:]
    for variant in ("by/size", "by/d/size", "by/size/1", "by/size/1/0", "by/d/size/1", "by/d/size/1/0"):
        assert api.get(f"{V1}/status/list/online/{variant}")[0] == 200
    code, _ = api.get(f"{V1}/status/list")
    assert code in (301, 308)


def test_show(setup, clock):
    node, api = setup
    t1, t2, t3 = three_farmers(api)
    clock.advance(INTERVAL + 30)  # t1's and t2's contracts are answered: they expire at due + interval
    uptime = UptimeSummary(node.stores.status, clock)  # the uptime job's body
    run(uptime())
    code, body = api.get(f"{V1}/status/show/{farmer_id(t1)}")
    assert code == 200
    assert body["contracts"] == 2 and body["size"] == 20480 and body["online"] is True
    assert body["uptime"] == 100.0 and body["heartbeats"] == 2 and ISO.match(body["last_due"])
    assert api.get(f"{V1}/status/show/{farmer_id(t3)}")[1]["online"] is False
    missing = (404, {"status": "error", "message": "Nonexistant farmer id."})
    assert api.get(f"{V1}/status/show/{'0' * 20}") == missing
    assert api.get(f"{V1}/status/show/zz") == missing


def test_uptime_is_a_percentage_of_time_since_first_contract(setup, clock):
    node, api = setup
    token = api.new_token()
    [c] = chunks(api, token, 4096)  # never answered: expires at start + INTERVAL
    clock.advance(30)
    uptime = UptimeSummary(node.stores.status, clock)  # the uptime job's body
    run(uptime())
    assert api.get(f"{V1}/status/show/{farmer_id(token)}")[1]["uptime"] == 100.0
    clock.advance(90)
    run(node.expiry.expire())
    run(uptime())
    shown = api.get(f"{V1}/status/show/{farmer_id(token)}")[1]
    assert shown["uptime"] == 50.0 and shown["online"] is False  # 60 s online of 120
    clock.advance(120)
    run(uptime())  # offline time keeps counting
    assert api.get(f"{V1}/status/show/{farmer_id(token)}")[1]["uptime"] == 25.0


def test_expire_ends_answered_and_fails_missed(setup, clock):
    node, api = setup
    token = api.new_token()
    a, b = chunks(api, token, 8192)
    answer(api, token, [(a["file_hash"], prove(a))])
    clock.advance(INTERVAL)
    result = run(node.expiry.expire())
    assert (result.ended, result.failed) == (0, 1)  # b missed its due time
    clock.advance(INTERVAL)
    result = run(node.expiry.expire())
    assert (result.ended, result.failed) == (1, 0)  # a was answered and never refreshed
    idle = {"ended": 0, "failed": 0, "contained": 0, "more": False, "failed_ids": []}
    assert run(node.expiry.expire()).__dict__ == idle  # idempotent
    assert api.get(f"{V1}/tags/{token}")[1] == {"tags": []}


def test_pool_refill_is_idempotent_and_off_the_reactor_thread(setup):
    node, api = setup
    calls = []
    inner = node.pool.blocking

    def spy(func, *args, **kwargs):
        calls.append(func.__name__)
        return inner(func, *args, **kwargs)

    node.pool.blocking = spy  # the pool's way off the reactor thread
    assert run(node.pool.refill()) == 0  # already full
    token = api.new_token()
    assert len(chunks(api, token, 1 << 20)) == 8
    assert run(node.pool.refill()) == 8
    assert calls and set(calls) == {"encode_chunks"}
    assert len(chunks(api, token, 1 << 20)) == 8


def test_jobs_are_built_and_run_on_the_clock(setup, clock):
    node, api = setup
    jobs = build_jobs(node)
    names = {job.name for job in jobs}
    assert {"contracts", "seeded_pool", "uptime"} <= names
    token = api.new_token()
    chunks(api, token, 1 << 20)  # empty the pool
    pool = next(job for job in jobs if job.name == "seeded_pool")
    pool.startService()
    try:
        assert pool.runs == 1 and pool.failures == 0 and pool.last_result == 8
    finally:
        pool.stopService()


def test_v1_contracts_are_not_failed_by_the_nodes_own_downtime(tmp_path, db_url, clock):
    """Downtime rule for v1: the node's downtime is added to the due time and expiration of every
    active contract, once; contracts then run their course as usual."""

    node, api = build(tmp_path, db_url, clock, seeded_pool="4096:4", max_tokens_per_ip=0, late_grace=0)
    run(node.pool.refill())
    token = api.new_token()
    a, b, c = chunks(api, token, 3 * 4096)  # due at t0 + 60
    answer(api, token, [(a["file_hash"], prove(a))])  # a answered: expires at due + interval
    run(contract_timer(node)())
    down_at = clock.seconds()
    clock.advance(20)
    node.db.close()
    clock.advance(INTERVAL + 10)  # down for 70 s (the last pass was 20 s before it stopped)
    restarted, api = build(tmp_path, db_url, clock, seeded_pool="4096:4", max_tokens_per_ip=0, late_grace=0)
    timer = contract_timer(restarted)
    summary = run(timer())
    assert summary.downtime == clock.seconds() - down_at
    assert (summary.v1_failed, summary.v1_ended, summary.v1_extended) == (0, 0, 3)
    assert run(timer()).v1_extended == 0  # once per window
    # b is answered after the return with its outstanding challenge (now due at t0 + 60 + 90)
    code, body = answer(api, token, [(b["file_hash"], prove(b))])
    assert body["report"] == [{"file_hash": b["file_hash"], "status": "ok"}]
    clock.advance(INTERVAL - 1)  # t0 + 149: c still has a second
    assert run(timer()).v1_failed == 0
    clock.advance(1)  # c never answers: it fails at its moved due time, a normal miss
    summary = run(timer())
    assert (summary.v1_failed, summary.v1_ended, summary.v1_extended) == (1, 0, 0)
    # a asks for its next challenge at its moved due time and carries on
    got = api.post(f"{V1}/challenge/{token}", {"hashes": [a["file_hash"]]})[1]["challenges"]
    assert "challenge" in got[0] and got[0]["answered"] is False, got
    assert answer(api, token, [(a["file_hash"], prove(a, got[0]["challenge"]))])[1]["report"][0]["status"] == "ok"
    restarted.db.close()


def test_the_v1_downtime_shift_is_applied_once_per_window(setup, clock):
    node, api = setup
    token = api.new_token()
    [c] = chunks(api, token, 4096)
    t = clock.seconds()

    def deadline():
        return run(v1_deadline(node.stores.seeded.db, c["file_hash"]))

    before = deadline()
    assert run(node.stores.seeded.shift_for_downtime(t, t + 30)) == 1
    assert run(node.stores.seeded.shift_for_downtime(t, t + 30)) == 0  # a retried transaction
    assert deadline() == before + 30
    run(node.stores.seeded.shift_for_downtime(t, t + 40))  # the same downtime, seen later
    assert deadline() == before + 40


# --- the Status service called directly ------------------------------------------------------------

def test_status_service_list_and_show(setup, clock):
    from downstream_tx.errors import NodeError
    from downstream_tx.v1.wire import MSG_INVALID_SORT, NONEXISTENT_FARMER

    node, api = setup
    t1, t2, t3 = three_farmers(api)
    status = node.status
    listed = run(status.farmers())
    assert [f["id"] for f in listed] == sorted(farmer_id(t) for t in (t1, t2, t3))
    assert set(listed[0]) == {"id", "address", "location", "uptime", "heartbeats", "contracts", "size", "online",
                              "last_due", "audit_score", "online_score", "unknown_score", "reputation", "vetted",
                              "contained", "audits", "last_seen", "seen_online"}
    online = run(status.farmers(online=True, sort="size", descending=True))
    assert [f["id"] for f in online] == [farmer_id(t1), farmer_id(t2)]
    assert [f["size"] for f in online] == [20480, 4096] and all(ISO.match(f["last_due"]) for f in online)
    assert [f["id"] for f in run(status.farmers(limit=1, page=1))] == [f["id"] for f in listed][1:2]
    assert run(status.farmers(limit=1 << 40, page=1 << 40)) == []  # clamped, not an error
    with pytest.raises(NodeError) as e:
        run(status.farmers(sort="nope"))
    assert (e.value.kind, e.value.message) == ("invalid", MSG_INVALID_SORT)
    shown = run(status.farmer(farmer_id(t1).upper()))
    assert (shown["id"], shown["heartbeats"], shown["contracts"]) == (farmer_id(t1), 2, 2)
    assert shown["location"] is None
    for bad in ("0" * 20, "xyz", farmer_id(t1) + "0"):
        with pytest.raises(NodeError) as e:
            run(status.farmer(bad))
        assert (e.value.kind, e.value.message) == ("not_found", NONEXISTENT_FARMER)


def test_seen_online_is_the_addresss_last_request_within_the_online_window(tmp_path, db_url, clock):
    """``seen_online``: online by its requests (``last_seen``), not by its contracts (``online``)."""
    node, api = build(tmp_path, db_url, clock, seeded_pool="4096:2", max_tokens_per_ip=0, online_window=600,
                      last_seen_every=60)
    run(node.pool.refill())
    try:
        token = api.new_token(make_address(1))  # a request
        chunks(api, token, 4096)
        assert (farmer_status(api, token)["seen_online"], farmer_status(api, token)["online"]) == (True, True)
        clock.advance(600 + 60)  # the window, and the most the stored time may lag the request
        assert farmer_status(api, token)["seen_online"] is True
        clock.advance(1)
        shown = farmer_status(api, token)
        assert (shown["seen_online"], shown["online"]) == (False, False)  # (its contract expired too)
        chunks(api, token, 4096)  # back
        assert farmer_status(api, token)["seen_online"] is True
    finally:
        node.db.close()
